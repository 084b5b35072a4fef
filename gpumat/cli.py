"""The ``gpumat`` command line (SPEC §6).

Exit status 0 on success; on a ``GpumatError``, 2 and one line on stderr that says what and where
(the traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import json
import sys


def _count(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


def _schema_arg(text: str) -> dict[str, str]:
    from gpumat.core.errors import SchemaError

    schema = {"ts": "int64"}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, dtype = part.partition(":")
        if not sep or not name:
            raise SchemaError(f"--schema: expected name:dtype pairs like item_id:int64,action:int32, got {part!r}")
        schema[name] = dtype
    return schema


def cmd_ingest(args) -> int:
    import pyarrow as pa

    from gpumat.core.errors import SchemaError, TierError
    from gpumat.host.events import read_events, read_events_table
    from gpumat.host.schema import check_schema
    from gpumat.host.tier import Tier

    events = read_events_table(args.events)  # a missing or unreadable file fails before the tier is touched
    try:
        tier = Tier.open(args.tier)
        if args.schema is not None and _schema_arg(args.schema) != tier.schema:
            raise SchemaError(f"--schema {args.schema!r} differs from the schema of the tier at {args.tier}: {tier.schema}")
        if args.no_large_packs and tier.large_packs:
            raise SchemaError(f"--no-large-packs: the tier at {args.tier} was created with larger packs allowed "
                              "(a tier's setting, chosen when it is created)")
    except TierError:
        if Tier.exists(args.tier):
            raise
        if args.schema is None:
            # no --schema: int32 columns stay int32, every other integer column is int64
            schema = {f.name: "int32" if f.type == pa.int32() else "int64" for f in events.schema if f.name != "user_id"}
        else:
            schema = _schema_arg(args.schema)
        # check the events before creating anything: a failed ingest leaves no empty tier behind
        read_events(events, check_schema(schema))
        tier = Tier.create(args.tier, schema, large_packs=not args.no_large_packs)
    v = tier.append(events)
    print(f"{args.tier}: appended {events.num_rows} events as version {v}")
    return 0


def cmd_compact(args) -> int:
    from gpumat.host.tier import Tier

    tier = Tier.open(args.tier)
    before, v0 = tier.stats(), tier.version
    v = tier.compact()
    if v == v0:
        print(f"{args.tier}: nothing to compact ({before['stripes']} stripes for {before['users']} users); "
              f"no version committed, still at version {v}")
        return 0
    after = tier.stats()
    print(f"{args.tier}: compacted into version {v}: {before['stripes']} -> {after['stripes']} stripes")
    return 0


def cmd_vacuum(args) -> int:
    from gpumat.host.tier import Tier

    tier = Tier.open(args.tier)
    r = tier.vacuum(keep_last=args.keep_last, min_age_s=args.min_age)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
    else:
        print(f"{args.tier}: removed {r['files_removed']} files ({r['bytes_freed']:,} bytes); "
              f"versions {r['expired_before']}..{tier.version} retained ({r['versions_retained']})")
    return 0


def cmd_repair(args) -> int:
    from gpumat.core.errors import CorruptionError
    from gpumat.host.tier import Tier

    r = Tier.repair(args.tier, roll_back=args.roll_back)
    if args.json:
        print(json.dumps(r, indent=2, sort_keys=True))
    if r["ok"]:
        if not args.json:
            print(f"{args.tier}: version {r['latest']} opens; nothing to repair")
        return 0
    if args.roll_back:
        if not args.json:
            print(f"{args.tier}: {r['action']}")
        return 0
    raise CorruptionError(f"{r['problem']}; newest intact version: {r['intact']}. "
                          f"`gpumat repair {args.tier} --roll-back` would {r['action']}")


def cmd_upgrade(args) -> int:
    from gpumat.host.maintenance import has_old_format, upgrade
    from gpumat.host.store import LocalStore
    from gpumat.host.tier import Tier, tier_root

    root = tier_root(args.tier)
    if has_old_format(LocalStore(root)):
        r = upgrade(LocalStore(root))
        print(f"{args.tier}: converted to format 2 at version {r['version']} "
              f"({r['segments']} data files, {r['length_rows']} length rows; versions before {r['version']} expired)")
    t = Tier.open(root)
    from gpumat.host.writer import older_format

    old = [e for e in t._reader.state.files.values() if older_format(e)]
    if not old:
        print(f"{args.tier}: every data file of version {t.version} is in the current format")
        return 0
    before = t.version
    v = t.compact()  # compaction writes the current format and rewrites every older file (host/writer.py)
    n2 = sum(e.get("format", 2) < 3 for e in old)
    print(f"{args.tier}: {len(old)} data file(s) of version {before} ({n2} format 2, {len(old) - n2} format 3 with "
          f"16-byte dictionary heads) rewritten in the current format at version {v} "
          f"(older versions still read them until `gpumat vacuum`)")
    return 0


def _when(t: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_inspect(args) -> int:
    from gpumat.host import reader
    from gpumat.host.tier import Tier

    tier = Tier.open(args.tier, version=args.at)
    stats = tier.stats()
    versions = tier.versions(newest=None if args.json or args.versions == 0 else args.versions)
    user = None if args.user is None else [{"version": v, "length": n} for v, n in tier.user_lengths(args.user)]
    if args.json:
        out = dict(stats, versions=versions)
        if user is not None:
            out["user"] = {"user_id": args.user, "lengths": user}
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(f"tier {args.tier}  version {stats['version']}  block size {stats['block_size']}"
          f"{'' if stats['large_packs'] else '  (no larger packs)'}")
    print(f"  schema: {', '.join(f'{c}:{t}' for c, t in stats['schema'].items())}")
    fmts = ", ".join(f"{n} format {f}" for f, n in sorted(stats["segment_formats"].items()))
    print(f"  users {stats['users']:,}  events {stats['events']:,}  segments {stats['segments']:,}"
          f"{f' ({fmts})' if fmts else ''}  stripes {stats['stripes']:,}")
    print(f"  stored {stats['stored_bytes']:,} bytes")
    print(f"  {'column':<16}{'bytes':>14}{'bytes/event':>13}  encodings (stripes with each)")
    for c, col in stats["columns"].items():
        enc = ", ".join(f"{k} {v}" for k, v in sorted(col["encodings"].items()))
        lent = f"; {col['borrowed_stripes']:,} BORROWED from {', '.join(col['borrowed_from'])}" \
            if col.get("borrowed_stripes") else ""
        print(f"  {c:<16}{col['bytes']:>14,}{col['bytes_per_event']:>13.3f}  {enc}{lent}")
        st = col.get("stripe_tables") or {}
        if st.get("count"):
            print(f"  {'':<16}{st['bytes']:>14,}{'':>13}  in {st['count']:,} stripe tables (the largest {st['largest_bytes']:,} "
                  f"bytes; {st['read_in_part']:,} of {reader.TABLE_PART_BYTES:,} bytes or more, of which a short window of "
                  f"a long history reads the part it needs)")
    print("  encodings: FOR = frame of reference (value = block minimum + bit-packed offset);")
    print("             LFOR = linear FOR (value = base + slope * position + bit-packed residual), for trending columns like ts;")
    print("             PATCH = low bits + a bitmap of exceptions (sparse flags, heavy tails); RUN = run starts + run values;")
    print("             DELTA = steps prefix-summed per block (bursty timestamps); DICT = codes into a segment dictionary,")
    print("             or into a stripe's own table (of values, or of codes into the segment dictionary: a user's repeats);")
    print("             SIGNED = DELTA with steps back (packs); RADIX = small alphabets as mixed-radix digits;")
    print("             SPARSE = bitmaps stored as positions; CONST = one value, kept in the index (no bytes);")
    print("             BORROWED = another column's codes (an attribute of the item id: a table per code, no blobs)")
    shown = versions
    more = args.versions and len(shown) == args.versions and shown and shown[0]["version"] > 0
    print(f"  versions ({f'the newest {len(shown)}; --versions 0 lists all' if more else len(shown)}):")
    print(f"  {'version':>9}  {'operation':<10}{'events':>12}{'total':>14}  committed")
    for r in shown:
        print(f"  {r['version']:>9}  {r['operation']:<10}{r['events']:>12,}{r['total_events']:>14,}  {_when(r['committed_at'])}")
    if user is not None:
        print(f"  user {args.user}: length at each version where it changed"
              + ("" if user else f" (no events up to version {stats['version']})"))
        for r in user:
            print(f"  {r['version']:>9}  {r['length']:>12,}")
    return 0


def cmd_materialize(args) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gpumat.api import materialize
    from gpumat.core.errors import GpumatError, SchemaError
    from gpumat.core.names import POINTER_COLUMNS, TAIL_PREFIX
    from gpumat.core.tenant import Tenant
    from gpumat.host.examples import read_examples_table
    from gpumat.host.tier import Tier
    from gpumat.ops import pick_device

    device = pick_device(args.device)  # before reading anything: a device that cannot work here fails now
    try:
        with open(args.tenant) as f:
            tenant = Tenant.from_json(json.load(f))
    except FileNotFoundError:
        raise SchemaError(f"tenant file {args.tenant!r} not found") from None
    except (OSError, ValueError) as e:  # ValueError: JSON syntax, or bytes that are not UTF-8
        raise SchemaError(f"cannot read tenant {args.tenant!r}: {e}") from None
    tier = Tier.open(args.tier)
    table = read_examples_table(args.examples)
    batch = materialize(tier, table, tenant, device=device, backend=args.backend)
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


# (command, module under gpumat, help): commands whose options live in a heavy module, imported
# only when that command is the one being parsed, so `gpumat inspect` never imports torch.
HEAVY = {
    "storage": ("bench.storage", "tier vs Fat Row and store-once Parquet: bytes stored and read, CPU time"),
    "kernels": ("bench.kernels", "decode-gather backends on a GPU against the copy ceilings (needs CUDA)"),
    "e2e": ("bench.e2e", "training steps fed by the pipeline: ideal, overlapped and synchronous"),
    "versions": ("bench.versions", "a tier at streaming scale: append, open, materialize and size against versions"),
    "quality": ("bench.quality", "HSTU quality against max_len (same examples, targets, steps; several seeds)"),
    "engines": ("bench.engines", "what each engine's host work costs the training process, on streamed examples"),
    "demo": ("demo.ml1m", "the main job: MovieLens-1M as a versioned tier, three tenants, HSTU training"),
}


def _requested(argv: list[str]) -> set[str]:
    """The heavy commands named on the command line (their modules' options are needed)."""
    words = [a for a in argv if not a.startswith("-")]
    if words[:1] == ["demo"]:
        return {"demo"}
    if words[:1] == ["bench"] and len(words) > 1:
        return {words[1]}
    return set()


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line (exit 2), like every other failure of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI's parser; the options of a benchmark or the demo are added only when ``argv`` names it."""
    from gpumat import __version__

    wanted = _requested(sys.argv[1:] if argv is None else list(argv))
    p = _Parser(prog="gpumat", description="Versioned late materialization of user histories.")
    p.add_argument("--version", action="version", version=f"gpumat {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    # --debug is accepted after the command too; SUPPRESS keeps a top-level --debug from being reset
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    s = sub.add_parser("ingest", parents=[common], help="append an events Parquet file to a tier (creating it if absent)")
    s.add_argument("tier")
    s.add_argument("events")
    s.add_argument("--schema", help="feature columns as name:dtype,... (ts:int64 is implied)")
    s.add_argument("--no-large-packs", action="store_true",
                   help="creating the tier: short histories in packs of one block only, never of up to 512 events "
                        "(for jobs that read short histories shuffled: each read reads its own block; docs/DESIGN.md §2)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("compact", parents=[common],
                       help="rewrite the tier's histories into long stripes (a new version; nothing if already compact)")
    s.add_argument("tier")
    s.set_defaults(func=cmd_compact)

    s = sub.add_parser("inspect", parents=[common], help="versions, sizes and encodings of a tier")
    s.add_argument("tier")
    s.add_argument("--at", type=int, default=None, metavar="VERSION",
                   help="inspect the tier as it was at VERSION (default: the latest)")
    s.add_argument("--user", type=int, default=None, metavar="ID", help="also show this user's length at every version")
    s.add_argument("--versions", type=_count, default=20, metavar="N",
                   help="list the newest N versions (default 20; 0 lists all)")
    s.add_argument("--json", action="store_true", help="everything as JSON (all versions)")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("vacuum", parents=[common],
                       help="delete files no retained version needs (superseded, debris, expired versions)")
    s.add_argument("tier")
    s.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="also expire every version older than the newest N (pointers into them stay valid)")
    s.add_argument("--min-age", type=float, default=3600.0, metavar="SECONDS",
                   help="never touch what versions committed in the last SECONDS need (default 3600)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_vacuum)

    s = sub.add_parser("repair", parents=[common],
                       help="check the newest versions' metadata; --roll-back recovers from a lost or damaged one")
    s.add_argument("tier")
    s.add_argument("--roll-back", action="store_true",
                   help="commit a new version equal to the newest intact one (lost numbers are never reused)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_repair)

    s = sub.add_parser("upgrade", parents=[common], help="bring a tier to the current format: convert a format-1 tier (one manifest per "
                                "version) in place, then rewrite format-2 data files as format 3 in a new version")
    s.add_argument("tier")
    s.set_defaults(func=cmd_upgrade)

    s = sub.add_parser("materialize", parents=[common], help="rebuild examples' sequences for a tenant into Parquet")
    s.add_argument("tier")
    s.add_argument("examples", nargs="+",
                   help="examples: Parquet file(s), directories or glob patterns (files without tail columns have empty tails)")
    s.add_argument("--tenant", required=True, help="tenant JSON: {\"name\": ..., \"columns\": [...], \"max_len\": N}")
    s.add_argument("--out", required=True, help="output Parquet file")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, or auto")
    s.add_argument("--backend", default="auto", choices=["auto", "reference", "triton", "torch", "numpy", "cupy"])
    s.set_defaults(func=cmd_materialize)

    s = sub.add_parser("bench", parents=[common], help="benchmarks: storage, kernels, e2e, versions, quality, engines")
    bsub = s.add_subparsers(dest="bench", required=True, metavar="BENCHMARK", parser_class=_Parser)
    for name in ("storage", "kernels", "e2e", "versions", "quality", "engines"):
        b = bsub.add_parser(name, parents=[common], help=HEAVY[name][1], description=HEAVY[name][1])
        _heavy(name, b, name in wanted)

    s = sub.add_parser("demo", parents=[common], help=HEAVY["demo"][1], description=HEAVY["demo"][1])
    _heavy("demo", s, "demo" in wanted)
    return p


def _heavy(name: str, parser, load: bool) -> None:
    """Wire a benchmark or the demo: its ``run``, and its options when it is the command being parsed."""
    import importlib

    module = f"gpumat.{HEAVY[name][0]}"
    if load:
        importlib.import_module(module).add_arguments(parser)

    def run(args):
        importlib.import_module(module).run(args)  # returns its results for programmatic use
        return 0

    parser.set_defaults(func=run)


def _label(args) -> str:
    """``gpumat bench kernels``: the command as typed, for the one line of an error."""
    return " ".join(["gpumat", args.command] + ([args.bench] if getattr(args, "bench", None) else []))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())  # one line, whatever the message (pyarrow's can span several)


class _Terminated(BaseException):
    """SIGTERM (a scheduler stopping the job), raised in the main thread so that every ``finally``
    runs: temporary tiers removed, worker processes and shared memory released."""


def _on_sigterm(signum, frame):
    raise _Terminated()


def main(argv=None) -> int:
    import signal
    import threading

    from gpumat.core.errors import GpumatError

    parser = build_parser(argv)
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except GpumatError as e:
        if args.debug:
            raise
        print(f"{_label(args)}: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`gpumat inspect --json | head -1`): stop writing, say so once.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        print(f"{_label(args)}: output closed early (broken pipe)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gpumat: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("gpumat: terminated (SIGTERM); cleaned up", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
