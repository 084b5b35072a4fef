"""ML-1M's history program (item_id, rating, ts for the check; masked loads) compiled for sm_90 with
the path set the launcher takes for the real batches and with the paths of single tile kinds: its
SASS instructions, registers and loads. Run from the repository root."""
from gpumat.bench import static as S
key = (("int64", True, False), ("int32", True, False), ("int64", False, True))
cfgs = {
 "union short (as launched)": (7, 6, 0, 7, 4, 2),
 "union long": (7, 4, 0, 3, 4, 2),
 "common tile: item PATCH codes, rating RADIX, ts DELTA PATCH": (0b101, 0, 0, 0b001, 0b100, 0b010),
 "item DICT, rating plain, ts RUN": (0, 0b100, 0, 0b001, 0, 0),
 "item PATCH codes, rating PATCH codes, ts DELTA PATCH": (0b111, 0, 0, 0b011, 0b100, 0),
}
infos = [S._compile_config((90, "history_masked", key, False, False, False, False, a)) for a in cfgs.values()]
S._disassemble(90, infos)
for (k, a), c in zip(cfgs.items(), infos):
    print(f"{k:<62} sass {c['sass_instructions']:>5}  regs {c['regs']}  loads {c['sass_by_kind']['load']}")
