"""``graft`` and ``extract`` sub-commands: argument parsing, the progress bar and the printed reports.

The library (the graft package, extract included) only logs; everything the user reads is
printed here. Exit codes follow cli/__init__.py: 0 done (or a feasible dry run), 1 refused or
failed (TARGET untouched), 2 unusable input.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING, Any, Iterator

from ..graft.sizes import human_bytes, parse_size
from ..text import listed
from ._format import emit_json as _emit_json
from ._format import out as _out

if TYPE_CHECKING:
    from ..graft.records import GraftPlan, GraftReport

# ----------------------------------------------------------------------------- printing

#: Width of the label column ("architecture: " is the longest label).
LABEL_WIDTH = 14
#: Below this many bytes copied, a rate says more about start-up than about the disk.
RATE_MIN_BYTES = 64 << 20


def _row(label: str, text: str) -> str:
    """``label:`` padded to the label column, then the text: every report line aligns."""
    return f"{label + ':':<{LABEL_WIDTH}}{text}"


def _rate(nbytes: int, seconds: float) -> str:
    """`` (1.23 GB/s)`` for a copy big enough to measure, else nothing."""
    if nbytes < RATE_MIN_BYTES or seconds <= 0:
        return ""
    return f" ({nbytes / seconds / 1e9:.2f} GB/s)"


def format_plan(plan: GraftPlan) -> str:
    """The dry-run plan: what is read from where, what is written, which configs change."""
    return _format_finish(plan) if plan.finish_only else _format_copy(plan)


def _format_finish(plan: GraftPlan) -> str:
    """A plan that finishes an interrupted run: the clean-up left to do."""
    lines = [_row("plan", f"{plan.mode}: finish an interrupted run in {plan.dest}")]
    lines += [f"  move aside: {a} -> {b}" for a, b in plan.pending_moves]
    lines += [_row("note", n) for n in plan.notes]
    return "\n".join(lines)


def _format_copy(plan: GraftPlan) -> str:
    """A plan that copies the layer: sources, new files, config edits, then the bytes and the disk."""
    title = {"in-place": f"graft into {plan.target} (in place)",
             "overlay": f"graft into an overlay of {plan.target} at {plan.dest} (target shards linked)",
             "overlay-only": f"graft into an upload-only overlay of {plan.target} at {plan.dest}",
             "extract": f"extract a standalone draft into {plan.dest}"}[plan.mode]
    lines = [_row("plan", title), _row("source", plan.source),
             _row("architecture", f"{plan.architecture} (family {plan.family})")]
    draft, output = plan.layer_names
    layer = draft + (f" -> {output}" if output != draft else "")
    lines.append(_row("draft layer", f"{layer}: {plan.draft_tensors} tensors, {plan.draft_bytes:,} bytes, "
                                     f"{plan.draft_precision}"))
    if plan.target_status:
        lines.append(_row("target now", plan.target_status))
    if plan.lineage is not None:
        lines.append(_row("lineage", _lineage_line(plan.lineage)))
    lines.append(_row("read", f"{len(plan.source_ranges)} SOURCE shard(s), these byte ranges:"))
    for shard, spans in plan.source_ranges.items():
        shown = listed((f"[{a:,}, {b:,})" for a, b in spans), limit=4)
        lines.append(f"  {shard}: {sum(b - a for a, b in spans):,} bytes in {len(spans)} range(s): {shown}")
    lines.append(_row("write", f"{len(plan.shards)} new shard(s), then the JSON files:"))
    for shard in plan.shards:
        extra = f", replaces {shard.replaces}" if shard.replaces else ""
        resume = f", {shard.reusable_bytes:,} bytes verified by an earlier run (reused after re-hashing)" \
            if shard.resume else ""
        lines.append(f"  {shard.name}: {len(shard.tensors)} tensors, {shard.size:,} bytes ({shard.role}{extra}){resume}")
    for edit in plan.config_edits:
        backup = f" (backup {edit.backup})" if edit.backup else ""
        lines.append(f"  {edit.file}{backup}: {'; '.join(edit.changes)}")
    if plan.links:
        lines.append(f"  {len(plan.links)} symlink(s) to TARGET's shards")
    if plan.small_files:
        lines.append(f"  copies of {len(plan.small_files)} small file(s): {', '.join(plan.small_files)}")
    for d in plan.displaced:
        where = f": moved aside to {d.moved_to} after the commit" if d.moved_to else ": not part of the result"
        lines.append(f"  displaced {d.name} ({d.reason}){where}")
    if plan.total_size_before is not None or plan.mode != "extract":
        before = plan.total_size_before if plan.total_size_before is None else format(plan.total_size_before, ",")
        lines.append(_row("index", f"{plan.index_entries_before:,} -> {plan.index_entries_after:,} entries, "
                                   f"total_size {before} -> {plan.total_size_after:,}"))
    lines.append(_row("bytes", f"{plan.bytes_to_read:,} to read, {plan.bytes_to_write:,} to write "
                               f"({human_bytes(plan.bytes_to_write)})"
                      + (f", {plan.bytes_reusable:,} reusable" if plan.bytes_reusable else "")))
    from ..graft.records import SPACE_MARGIN

    lines.append(_row("disk", f"{human_bytes(plan.needed_bytes)} needed (what is written plus a "
                              f"{human_bytes(SPACE_MARGIN)} margin), {human_bytes(plan.free_bytes)} free"
                      + ("" if plan.enough_space else "  <- NOT ENOUGH")))
    lines += [_row("note", n) for n in plan.notes]
    return "\n".join(lines)


def _lineage_line(doc: dict[str, Any]) -> str:
    compared, differing = len(doc["compared"]), len(doc["differing"])
    read = sum(doc["bytes_read"].values())
    if doc["verdict"] == "not-comparable":
        return f"NOT CHECKED: no tensor both store unquantized ({human_bytes(read)} read)"
    state = "same release" if doc["verdict"] == "same-release" else f"OTHER RELEASE ({differing} differ)"
    return (f"{state}: {compared} unquantized tensors compared, {human_bytes(doc['compared_bytes_each_side'])} "
            f"each side ({human_bytes(read)} read, both indexes included)")


def format_report(report: GraftReport) -> str:
    verb = "extracted" if report.mode == "extract" else "grafted"
    draft, output = report.layer_names
    layer = draft + (f" -> {output}" if output != draft else "")
    lines = [_row(verb, f"{layer} from {report.source}"), _row("output", f"{report.output} ({report.mode})")]
    for shard in report.shards:
        reuse = f", {shard.reused_tensors} reused" if shard.reused_tensors else ""
        lines.append(f"  {shard.name}: {shard.tensors} tensors, {shard.bytes:,} bytes ({shard.role}{reuse})")
    if report.bytes_copied or report.bytes_reused:
        t = report.transfer
        streams = f", {t['streams']} streams" if t.get("streams", 0) > 1 else ""
        lines.append(_row("copied", f"{report.bytes_copied:,} bytes via {report.copy_method}{streams} in "
                                    f"{report.elapsed_s:.1f} s{_rate(report.bytes_copied, report.elapsed_s)}"
                          + (f"; {report.bytes_reused:,} bytes reused" if report.bytes_reused else "")))
        if t.get("source") == "hub" and t.get("rate_bytes_per_s"):
            extra = f", {t['retries']} retried" if t.get("retries") else ""
            extra += f", paused {t['throttle_wait_s']:.1f} s by 429/503" if t.get("throttled") else ""
            lines.append(" " * LABEL_WIDTH + f"Hub transfer: {t['bytes'] / t['seconds'] / 1e6:.1f} MB/s over "
                                              f"{t['streams']} stream(s), {t['requests']} Range request(s){extra}")
    for edit in report.config_edits:
        lines.append(f"  edited {edit}")
    if report.backups:
        lines.append(f"  backups: {', '.join(report.backups)}")
    if report.links:
        lines.append(f"  {report.links} symlink(s) to TARGET's shards")
    if report.small_files:
        lines.append(f"  copied {len(report.small_files)} small file(s)")
    for moved in report.moved_aside:
        lines.append(f"  moved aside {moved} (delete it once you are happy with the result)")
    v = report.verification
    if "tensors_hashed_while_copying" in v:
        reused = v.get("tensors_reused_after_rehash")
        lines.append(_row("verified", f"{v['tensors_hashed_while_copying']} tensor(s) {v['hash'].upper()}-hashed while copying "
                                      "and again from the written file"
                          + (f"; {reused} reused after re-hashing" if reused else "")))
        lines.append(" " * LABEL_WIDTH + f"check of the staged result before the commit: {v['staged_check']}")
    lines.append(_row("check", f"{report.check_status.upper()} ({v.get('final_check_tensors', '?')} draft tensors; "
                               f"{v.get('final_check_view', report.output)})"))
    for problem in report.check_problems:
        lines.append(f"  [{problem.severity}] {problem.code}: {problem.message}")
    lines += [_row("note", n) for n in report.notes]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running


@contextlib.contextmanager
def _progress(total: int, quiet: bool, desc: str) -> Iterator[Any]:
    """A tqdm bar with bytes and rate, only when a person watches stdout."""
    if quiet or not sys.stdout.isatty() or total <= 0:
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, dynamic_ncols=True,
              mininterval=0.2) as bar:
        yield bar.update


def _workers(args: argparse.Namespace) -> int | None:
    """``--workers N``, else ``SGLANG_GLM_MTP_WORKERS``; checked before any planning (bad value: exit 2)."""
    from ..graft.copying import parse_workers, workers_from_env

    return parse_workers(args.workers) or workers_from_env()


def _run(plan: GraftPlan, args: argparse.Namespace, desc: str, workers: int | None) -> int:
    from ..graft import execute
    from ..graft.copying import DEFAULT_WORKERS

    if args.dry_run:
        if args.json:
            _emit_json({"dry_run": True, "plan": plan.to_json()})
        else:
            _out(format_plan(plan))
        return 0 if plan.enough_space or plan.finish_only else 1
    total = sum(s.payload for s in plan.shards)
    if getattr(plan.source_obj, "is_remote", False):  # one bar for all streams: aggregate rate and ETA
        desc = f"{desc} ({workers or DEFAULT_WORKERS} streams)"
    with _progress(total, args.json, desc) as update:
        report = execute(plan, progress=update, workers=workers)
    if args.json:
        _emit_json({"dry_run": False, "plan": plan.to_json(), "result": report.to_json()})
    else:
        _out(format_report(report))
    return report.exit_code


def _graft(args: argparse.Namespace) -> int:
    from ..graft import plan_graft

    workers = _workers(args)
    plan = plan_graft(args.source, args.target, out=args.out, overlay_only=args.overlay_only, force=args.force,
                      max_shard_size=parse_size(args.max_shard_size), layer=args.layer, endpoint=args.endpoint,
                      allow_other_release=args.allow_other_release)
    return _run(plan, args, "graft", workers)


def _extract(args: argparse.Namespace) -> int:
    from ..graft.extract import plan_extract

    workers = _workers(args)
    plan = plan_extract(args.source, args.out, endpoint=args.endpoint)
    return _run(plan, args, "extract", workers)


WORKERS_HELP = ("concurrent HTTP Range streams when SOURCE is a Hub id (default 8, like hf download; env "
                "SGLANG_GLM_MTP_WORKERS); a local SOURCE uses at most 4")


def _register(sub: Any) -> None:
    graft = sub.add_parser(
        "graft", help="copy the draft layer from the original release into a checkpoint that lacks it",
        description="Streams the draft-layer tensors byte for byte from SOURCE (local dir or Hub id "
                    "org/name[@revision]; only headers and the layer's byte ranges are read) into new shards of "
                    "TARGET, rebuilds the index, keeps the BF16 layer out of quantization, verifies every tensor "
                    "and checks the result. Atomic and resumable: re-run the same command after an interruption.")
    graft.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                       help="checkpoint that holds the draft layer: local dir or Hub id org/name[@revision]")
    graft.add_argument("--into", dest="target", required=True, metavar="TARGET",
                       help="local checkpoint whose draft layer is missing or incomplete; or org/name[@revision] "
                            "when the Hugging Face cache holds it (hf download without --local-dir): then --out is "
                            "required and the overlay links the cached files")
    graft.add_argument("--out", metavar="OVERLAY_DIR",
                       help="leave TARGET untouched; write new shards, index, configs and small files here "
                            "(TARGET's shards are symlinked, so the folder loads as is)")
    graft.add_argument("--overlay-only", action="store_true",
                       help="with --out: no symlinks, just the files to upload on top of TARGET's repo")
    graft.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                       help="split the new layer into shards of at most SIZE (default 5GB, as Hugging Face; "
                            "0 = one file)")
    graft.add_argument("--layer", type=int, default=None, metavar="N",
                       help="the draft layer you expect (model.layers.N); refuses if the checkpoints say otherwise")
    graft.add_argument("--force", action="store_true", help="replace a draft layer that is already complete")
    graft.add_argument("--allow-other-release", action="store_true",
                       help="graft even though the tensors SOURCE and TARGET both store unquantized differ (SOURCE "
                            "is not the release TARGET was quantized from); for deliberate cross-release grafts")
    graft.add_argument("--dry-run", action="store_true",
                       help="print the plan (byte ranges, bytes to read and write, files, config edits); write nothing")
    graft.add_argument("--json", action="store_true", help="machine-readable plan and result on stdout")
    graft.add_argument("--workers", default=None, metavar="N", help=WORKERS_HELP)
    graft.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)

    extract = sub.add_parser(
        "extract", help="write a standalone draft checkpoint for --speculative-draft-model-path",
        description="The layout of SGLang's scripts/export_deepseek_nextn.py (layer renamed to 0, embed_tokens and "
                    "shared_head.head left out, nextn_layer_parameters.safetensors + index, config with "
                    "num_hidden_layers=1 and the NextN architecture), streamed and verified like graft.")
    extract.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                         help="checkpoint that holds the draft layer: local dir or Hub id org/name[@revision]")
    extract.add_argument("--out", required=True, metavar="DIR", help="new or empty output directory")
    extract.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    extract.add_argument("--json", action="store_true", help="machine-readable plan and result on stdout")
    extract.add_argument("--workers", default=None, metavar="N", help=WORKERS_HELP)
    extract.add_argument("--endpoint", default=None, help=argparse.SUPPRESS)


COMMANDS = {"graft": _graft, "extract": _extract}
register = _register
