"""The ``gpumat`` command line (SPEC §6).

Exit status 0 on success; on a ``GpumatError``, 2 and one line on stderr that says what and where
(the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys


def _schema_arg(text: str) -> dict[str, str]:
    from gpumat.errors import SchemaError

    schema = {"ts": "int64"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dtype = part.partition(":")
        if not sep or not name:
            raise SchemaError(f"--schema: expected name:dtype pairs like item_id:int64,action:int32, got {part!r}")
        schema[name] = dtype
    return schema


def cmd_ingest(args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpumat.errors import SchemaError, TierError
    from gpumat.host.schema import check_schema
    from gpumat.host.tier import Tier, _read_events

    try:
        events = pq.read_table(args.events)
    except (OSError, ValueError) as e:
        raise SchemaError(f"cannot read events {args.events!r}: {e}") from None
    try:
        tier = Tier.open(args.tier)
        if args.schema is not None and _schema_arg(args.schema) != tier.schema:
            raise SchemaError(f"--schema {args.schema!r} differs from the schema of the tier at {args.tier}: {tier.schema}")
    except TierError:
        if Tier.exists(args.tier):
            raise
        if args.schema is None:
            # no --schema: int32 columns stay int32, every other integer column is int64
            schema = {f.name: "int32" if f.type == pa.int32() else "int64" for f in events.schema if f.name != "user_id"}
        else:
            schema = _schema_arg(args.schema)
        # check the events before creating anything: a failed ingest leaves no empty tier behind
        _read_events(events, check_schema(schema))
        tier = Tier.create(args.tier, schema)
    v = tier.append(events)
    print(f"{args.tier}: appended {events.num_rows} events as version {v}")
    return 0


def cmd_compact(args) -> int:
    from gpumat.host.tier import Tier

    tier = Tier.open(args.tier)
    before = tier.stats()
    v = tier.compact()
    after = tier.stats()
    print(f"{args.tier}: compacted into version {v}: {before['stripes']} -> {after['stripes']} stripes")
    return 0


def cmd_inspect(args) -> int:
    from gpumat.host.tier import Tier

    tier = Tier.open(args.tier, version=args.version)
    stats = tier.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    print(f"tier {args.tier}  version {stats['version']}  block size {stats['block_size']}")
    print(f"  schema: {', '.join(f'{c}:{t}' for c, t in stats['schema'].items())}")
    print(f"  users {stats['users']:,}  events {stats['events']:,}  segments {stats['segments']:,}  stripes {stats['stripes']:,}")
    print(f"  stored {stats['stored_bytes']:,} bytes")
    print(f"  {'column':<16}{'bytes':>14}{'bytes/event':>13}  encodings")
    for c, col in stats["columns"].items():
        enc = ", ".join(f"{k} {v}" for k, v in sorted(col["encodings"].items()))
        print(f"  {c:<16}{col['bytes']:>14,}{col['bytes_per_event']:>13.3f}  {enc}")
    return 0


def cmd_materialize(args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpumat.api import materialize
    from gpumat.batch import Tenant
    from gpumat.errors import GpumatError, SchemaError
    from gpumat.host.examples import POINTER_COLUMNS, TAIL_PREFIX, read_examples_table
    from gpumat.host.tier import Tier

    try:
        with open(args.tenant) as f:
            tenant = Tenant.from_json(json.load(f))
    except (OSError, json.JSONDecodeError) as e:
        raise SchemaError(f"cannot read tenant {args.tenant!r}: {e}") from None
    tier = Tier.open(args.tier)
    table = read_examples_table(args.examples)
    batch = materialize(tier, table, tenant, device=args.device, backend=args.backend)
    offsets = batch.offsets.cpu().numpy()
    cols = {"user_id": table.column("user_id").cast(pa.int64())}
    for c in tenant.columns:
        v = batch.values[c].cpu().numpy()
        list_type = pa.ListArray if offsets[-1] < 2**31 else pa.LargeListArray  # list<dtype>, unless it overflows int32 offsets
        cols[c] = list_type.from_arrays(pa.array(offsets.astype("int32") if offsets[-1] < 2**31 else offsets), pa.array(v))
    for name in table.column_names:
        if name not in POINTER_COLUMNS and not name.startswith(TAIL_PREFIX):
            if name in cols:
                raise SchemaError(f"examples column {name!r} would pass through under the name of the output column "
                                  f"{name!r} of tenant {tenant.name!r}; rename it")
            cols[name] = table.column(name)
    try:
        pq.write_table(pa.table(cols), args.out)
    except (OSError, pa.ArrowException) as e:
        raise GpumatError(f"cannot write {args.out!r}: {e}") from None
    print(f"{args.out}: {batch.batch_size} examples, {int(offsets[-1])} events for tenant {tenant.name!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpumat", description="Versioned late materialization of user histories.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    # --debug is accepted after the command too; SUPPRESS keeps a top-level --debug from being reset
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    s = sub.add_parser("ingest", parents=[common], help="append an events Parquet file to a tier (creating it if absent)")
    s.add_argument("tier")
    s.add_argument("events")
    s.add_argument("--schema", help="feature columns as name:dtype,... (ts:int64 is implied)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("compact", parents=[common], help="rewrite the tier's histories into long stripes (new version)")
    s.add_argument("tier")
    s.set_defaults(func=cmd_compact)

    s = sub.add_parser("inspect", parents=[common], help="versions, sizes and encodings of a tier")
    s.add_argument("tier")
    s.add_argument("--version", type=int, default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("materialize", parents=[common], help="rebuild examples' sequences for a tenant into Parquet")
    s.add_argument("tier")
    s.add_argument("examples")
    s.add_argument("--tenant", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--backend", default="auto", choices=["auto", "reference", "triton"])
    s.set_defaults(func=cmd_materialize)

    s = sub.add_parser("bench", help="benchmarks: storage, kernels, e2e")
    bsub = s.add_subparsers(dest="bench", required=True)
    for name, module in (("storage", "bench_storage"), ("kernels", "bench_kernels"), ("e2e", "bench_e2e")):
        b = bsub.add_parser(name)
        b.set_defaults(func=_lazy(module))
        _add_bench_args(module, b)

    s = sub.add_parser("demo", help="the main job: real data, late materialization, training")
    _add_bench_args("demo", s)
    s.set_defaults(func=_lazy("demo"))
    return p


def _add_bench_args(module: str, parser) -> None:
    import importlib

    try:
        mod = importlib.import_module(f"gpumat.{module}")
    except ImportError:
        return
    mod.add_arguments(parser)


def _lazy(module: str):
    def run(args):
        import importlib

        importlib.import_module(f"gpumat.{module}").run(args)  # returns its results for programmatic use
        return 0

    return run


def main(argv=None) -> int:
    from gpumat.errors import GpumatError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except GpumatError as e:
        if args.debug:
            raise
        msg = " ".join(str(e).split())  # one line, whatever the message (pyarrow's can span several)
        print(f"gpumat {args.command}: {type(e).__name__}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpumat: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
