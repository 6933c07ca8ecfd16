"""Refusals before any planning: the source can supply a complete draft layer, the target
is one the graft may touch, and both are the same model."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint.families import Config, ModelFamily, family_for, written_prefix
from ..checkpoint.files import QUANT_FILE
from ..checkpoint.inspection import inspect_checkpoint
from ..checkpoint.provenance import base_model
from ..checkpoint.report import DAMAGE_CODES, InspectionReport, Problem
from ..checkpoint.source import (CheckpointSource, LocalCheckpoint, cache_holds_checkpoint, is_hub_repo_id,
                                 open_checkpoint, resolve_cached_hub_snapshot)
from ..errors import CheckpointUnreadable, GraftError, UsageError



def open_source(spec: str | CheckpointSource, endpoint: str | None) -> CheckpointSource:
    """A local directory or a Hub id ``org/name[@revision]``, or an already opened source."""
    return open_checkpoint(spec, endpoint=endpoint) if isinstance(spec, str) else spec


def local_dir(spec: str | Path, role: str) -> Path:
    """TARGET and --out are written, so they must be local; a Hub id gets the download command."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise UsageError(f"{role} {spec} is a file; expected a checkpoint directory")
    repo = str(spec).split("@", 1)[0]
    if is_hub_repo_id(repo):
        raise UsageError(f"{role} must be a local directory, not a Hub id; download it first: "
                         f"hf download {repo} --local-dir ./{repo.split('/')[-1]}")
    raise CheckpointUnreadable(f"no such directory: {spec}")


def cached_target(spec: str | Path, out: Path | None) -> Path | None:
    """TARGET given as ``org/name[@revision]`` that the local Hugging Face cache holds: its snapshot folder.

    That is what ``hf download org/name`` (no ``--local-dir``) leaves and what
    ``--model-path org/name`` serves. The cache is never written into, so ``--out`` is
    required (the overlay links the cached blobs), and an incomplete snapshot is refused with
    the rule the plugin's preflight applies (``source.cache_holds_checkpoint``). None when TARGET is not such an id or
    not cached (``local_dir`` then says how to download it).
    """
    text = str(spec)
    if isinstance(spec, Path) or Path(text).expanduser().exists() or text.startswith((".", "/", "~")) \
            or not is_hub_repo_id(text.split("@")[0]):
        return None
    repo, _, revision = text.partition("@")
    snapshot = resolve_cached_hub_snapshot(repo, revision or None)
    if snapshot is None:  # huggingface_hub hands out complete snapshots only; find a partial one to name it
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(repo, "config.json", revision=revision or None)
        if not isinstance(config, str):
            return None
        snapshot = Path(config).parent
    if out is None:
        raise UsageError(f"TARGET {text} is the Hugging Face cache snapshot {snapshot}, which graft never writes "
                         "into; add --out DIR to write an overlay that links the cached shards")
    complete, why = cache_holds_checkpoint(LocalCheckpoint(snapshot))
    if not complete:
        raise GraftError(f"TARGET {text}: the Hugging Face cache snapshot {snapshot} is incomplete ({why}); finish "
                         f"the download first: hf download {text.replace('@', ' --revision ')}")
    return snapshot


def source_report(source: CheckpointSource) -> tuple[InspectionReport, ModelFamily]:
    """Inspect SOURCE and refuse one that cannot supply a complete draft layer."""
    report = inspect_checkpoint(source)
    family = family_for(report.architecture)
    assert family is not None  # inspect_checkpoint refuses unsupported architectures
    where = source.display
    if report.status == "not-applicable":
        raise GraftError(f"SOURCE {where} declares no NextN layer (num_nextn_predict_layers = 0) and cannot supply one")
    if report.standalone_draft:
        raise GraftError(f"SOURCE {where} is a standalone draft checkpoint (layer renamed to 0); graft needs the full "
                         f"release that stores the draft layer at its own index, e.g. {family.source_hint} (a standalone "
                         "draft is used as it is, with --speculative-draft-model-path)")
    layer = report.draft_layer
    if report.status == "missing":
        raise GraftError(f"SOURCE {where} has no {written_prefix(family, layer or 0)}* tensors: it lacks the draft "
                         f"layer too. Use the unquantized release, e.g. --from {family.source_hint}")
    if report.status == "incomplete":
        raise GraftError(f"SOURCE {where} has an incomplete draft layer ({len(report.missing)} of "
                         f"{report.expected_tensors} tensors missing, e.g. {report.missing[0]}); graft needs a "
                         f"complete one, e.g. --from {family.source_hint}")
    if report.status == "invalid":
        details = "; ".join(p.message for p in report.errors())
        raise GraftError(f"SOURCE {where} cannot supply the draft layer: {details}")
    return report, family


#: Config fields that must agree; the expected draft tensor set (names and shapes) is compared too.
COMPAT_FIELDS = ("num_hidden_layers", "hidden_size", "n_routed_experts", "vocab_size", "moe_intermediate_size",
                 "n_shared_experts", "num_attention_heads", "num_key_value_heads", "q_lora_rank", "kv_lora_rank",
                 "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "index_n_heads", "index_head_dim",
                 "head_dim", "num_nextn_predict_layers")


def target_release(target: CheckpointSource, report: InspectionReport) -> str:
    """The ``--from`` to suggest for TARGET: the release its own files name (as check's remedy does), else
    TARGET's family's usual release. Never SOURCE's: a refused SOURCE may be another family's."""
    named = base_model(target, report.config, target.read_json(QUANT_FILE))
    if named is not None:
        return f"--from {named.repo_id}, which TARGET's {named.where} names"
    family = family_for(report.architecture)
    assert family is not None  # inspect_checkpoint refuses unsupported architectures
    return f"for {family.name}, e.g. --from {family.source_hint}"


def check_compatible(src: InspectionReport, dst: InspectionReport, release: str) -> None:
    """Refuse to mix layers of different models (architecture, sizes, the expected draft tensors).

    ``release`` (``target_release``) says which release to graft from instead.
    """
    diffs: list[str] = []
    if src.architecture != dst.architecture:
        diffs.append(f"architecture {src.architecture} vs {dst.architecture}")
    scfg, dcfg = Config(src.config), Config(dst.config)
    for key in COMPAT_FIELDS:
        a, b = scfg.get(key), dcfg.get(key)
        if a != b:
            diffs.append(f"{key} {a} vs {b}")
    if not diffs:  # same architecture: one family
        family = family_for(dst.architecture)
        assert family is not None
        try:
            a_set = {(t.name, t.shape) for t in family.draft_tensors(scfg)}
            b_set = {(t.name, t.shape) for t in family.draft_tensors(dcfg)}
        except (KeyError, ValueError, TypeError) as exc:
            raise GraftError(f"cannot derive the draft tensor list from config.json: {exc}") from None
        if a_set != b_set:
            only = sorted(n for n, _ in a_set ^ b_set)
            diffs.append(f"the expected draft tensors differ ({len(only)}, e.g. {only[0]})")
    if diffs:
        raise GraftError(f"SOURCE {src.checkpoint} and TARGET {dst.checkpoint} are not the same model: "
                         f"{'; '.join(diffs)}. Graft from the release TARGET was made from ({release})")


def check_target_status(report: InspectionReport, force: bool) -> None:
    """Refuse a target that has nothing to graft into, is damaged, or (without --force) is already complete."""
    where = report.checkpoint
    if report.status == "not-applicable":
        raise GraftError(f"TARGET {where} declares no NextN layer (num_nextn_predict_layers = 0); there is nothing "
                         "to graft into")
    if report.standalone_draft:
        raise GraftError(f"TARGET {where} is a standalone draft checkpoint; graft into the full quantized checkpoint")
    damaged = damage(report)
    if damaged:
        raise GraftError(f"TARGET {where} is damaged ({'; '.join(p.message for p in damaged)}); re-download the "
                         "files named, check it again, then graft")
    if needs_force(report) and not force:
        if report.status == "ready":
            raise GraftError(f"TARGET {where} already has a complete draft layer "
                             f"({written_prefix(family_for(report.architecture), report.draft_layer or 0)[:-1]}, "
                             f"{report.found_tensors} tensors, {report.draft_precision}); nothing to do. Pass --force "
                             "to replace it")
        details = "; ".join(p.message for p in report.errors())
        raise GraftError(f"TARGET {where} has a draft layer that check rejects ({details}); pass --force to replace it")


def damage(report: InspectionReport) -> list[Problem]:
    """The problems that make graft refuse a target whatever the flags: files to re-download first."""
    return [p for p in report.errors() if p.code in DAMAGE_CODES]


def needs_force(report: InspectionReport) -> bool:
    """Graft replaces the target's draft layer only with --force: it is complete, or present but rejected."""
    return report.status in ("ready", "invalid")
