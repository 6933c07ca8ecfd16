"""``synth`` sub-command: tiny synthetic checkpoints, healthy or broken, to try ``check`` and ``graft`` on.

Writes DIR/original-bf16 (a BF16 release with its MTP layer) and DIR/target-nvfp4 (an
NVFP4 conversion that lost it, or, with ``--defect CODE``, one whose only defect is CODE).
Exit 0 written, 2 unusable arguments (DIR not empty, unknown code).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ._format import out


def _synth(args: argparse.Namespace) -> int:
    from .. import synthetic

    workdir = Path(args.dir).expanduser()
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise UsageError(f"{workdir} exists and is not an empty directory; choose a new DIR")
    if args.defect and (args.family != "glm5" or args.quant_format != "modelopt"):
        raise UsageError("--defect needs --family glm5 and --quant-format modelopt (the defect variants are built "
                         "from the tiny GLM-5.2 ModelOpt NVFP4 pair)")
    workdir.mkdir(parents=True, exist_ok=True)
    if args.defect:
        target = synthetic.make_variant(workdir, args.defect)
        original = workdir / "original-bf16"
        what = f"tiny NVFP4 target whose only defect is {args.defect}"
    else:
        fmt = {"modelopt": "nested"}.get(args.quant_format, args.quant_format)
        storage = synthetic.FORMAT_STORAGES[fmt][0]
        pair = synthetic.tiny_pair(workdir, family=args.family, quant_format=fmt)
        original, target = pair.original, pair.target
        what = f"tiny {args.quant_format} {storage.upper()} target without its MTP draft layer"
    out(f"original: {original}  (tiny BF16 {args.family} release with its MTP draft layer)")
    out(f"target:   {target}  ({what})")
    out("try:")
    out(f"  sglang-glm-mtp check {target}")
    out(_graft_hint(original, target))
    return 0


def _graft_hint(original: Path, target: Path) -> str:
    """The graft line graft itself would accept for this target (graft/checks.py decides), or why there is none."""
    from ..checkpoint.inspection import inspect_checkpoint
    from ..graft.checks import damage, needs_force

    report = inspect_checkpoint(str(target))
    if damage(report):
        return "  (graft refuses a damaged target: restore the file check names first, then graft)"
    force = " --force" if needs_force(report) else ""
    return f"  sglang-glm-mtp graft --from {original} --into {target}{force}"


def register(sub: Any) -> None:
    from ..checkpoint.report import PROBLEM_CODES
    from ..synthetic import TINY_CONFIGS

    synth = sub.add_parser(
        "synth", help="write a tiny synthetic checkpoint (optionally broken) to try check and graft on",
        description="Writes DIR/original-bf16 (a tiny BF16 release with its MTP layer, real tensor names, dtypes "
                    "and shape rules) and DIR/target-nvfp4 (an NVFP4 conversion that lost the layer, or with "
                    "--defect CODE one whose only defect is CODE). A few MB; nothing is downloaded.")
    synth.add_argument("dir", metavar="DIR", help="new or empty directory")
    synth.add_argument("--family", choices=sorted(TINY_CONFIGS), default="glm5",
                       help="architecture of the tiny pair (default glm5: GLM-5.2-like)")
    synth.add_argument("--quant-format", choices=("modelopt", "compressed-tensors", "quark", "fp8"),
                       default="modelopt",
                       help="the target's quantization dialect: modelopt (NVFP4, hf_quant_config.json; default), "
                            "compressed-tensors (NVFP4, llm-compressor), quark (FP8, AMD Quark), fp8 (block FP8)")
    synth.add_argument("--defect", choices=[c for c in PROBLEM_CODES if c != "unexpected-tensor"], default=None,
                       metavar="CODE", help="give the target exactly this check problem code (built from the tiny "
                                            "GLM-5.2 ModelOpt pair, so only with the default --family glm5 and "
                                            "--quant-format modelopt): "
                                            + ", ".join(c for c in PROBLEM_CODES if c != "unexpected-tensor"))


COMMANDS = {"synth": _synth}
