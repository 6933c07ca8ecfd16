"""The fake Hub must fool huggingface_hub's real client, or Hub-path tests prove nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from huggingface_hub import HfApi, HfFileSystem, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save_file

from fake_hub import FakeHub  # tests/ is on sys.path (pytest rootdir insertion; no __init__.py)

REPO = "org/name"
SINGLE = "org/single"
SHA = "0123456789abcdef0123456789abcdef01234567"
V1_SHA = "89abcdef0123456789abcdef0123456789abcdef"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


@pytest.fixture(autouse=True)
def _isolated(isolated_hf: None) -> None:
    """Every test here talks to the fake Hub only (fixture in conftest.py)."""


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    """A tiny sharded checkpoint; shard 2 is bigger than the 100 kB header probe."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "config.json").write_text(json.dumps({"model_type": "glm4_moe", "num_hidden_layers": 2}))
    save_file({"a.weight": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(root / SHARD1))
    save_file({"b.weight": np.ones((256, 256), dtype=np.float32), "b.bias": np.zeros(4, dtype=np.float16)},
              str(root / SHARD2), metadata={"format": "pt"})
    index = {"metadata": {"total_size": 0},
             "weight_map": {"a.weight": SHARD1, "b.weight": SHARD2, "b.bias": SHARD2}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "sub").mkdir()
    (root / "sub" / "notes.txt").write_text("hello")
    (root / ".git").mkdir()  # never served
    (root / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return root


@pytest.fixture
def single_dir(tmp_path: Path) -> Path:
    root = tmp_path / "single"
    root.mkdir()
    save_file({"w": np.zeros((2, 2), dtype=np.float32)}, str(root / "model.safetensors"))
    return root


@pytest.fixture
def hub(repo_dir: Path, single_dir: Path) -> Iterator[FakeHub]:
    with FakeHub({REPO: repo_dir, SINGLE: single_dir}, revisions={REPO: {"main": SHA, "v1": V1_SHA}}) as h:
        yield h


def _fs(hub: FakeHub) -> HfFileSystem:
    return HfFileSystem(endpoint=hub.endpoint, token=False, skip_instance_cache=True)


def test_hf_file_system_listing_and_small_files(hub: FakeHub, repo_dir: Path) -> None:
    fs = _fs(hub)
    entries = {e["name"]: e for e in fs.ls(REPO, detail=True)}
    assert set(entries) == {f"{REPO}/{n}" for n in
                            ["config.json", SHARD1, SHARD2, "model.safetensors.index.json", "sub"]}
    assert entries[f"{REPO}/{SHARD2}"]["size"] == (repo_dir / SHARD2).stat().st_size
    assert entries[f"{REPO}/{SHARD2}"]["lfs"] is not None and entries[f"{REPO}/config.json"]["lfs"] is None
    assert entries[f"{REPO}/sub"]["type"] == "directory"

    for rev in ("v1", SHA):
        names = fs.ls(f"{REPO}@{rev}", detail=False)
        assert f"{REPO}@{rev}/config.json" in names
    assert fs.ls(f"{REPO}/sub", detail=False) == [f"{REPO}/sub/notes.txt"]

    assert fs.exists(f"{REPO}/config.json") and not fs.exists(f"{REPO}/nope.json")
    assert not fs.exists("org/missing/config.json") and not fs.exists(f"{REPO}@nope/config.json")
    info = fs.info(f"{REPO}/{SHARD1}")
    size1 = (repo_dir / SHARD1).stat().st_size
    assert (info["name"], info["size"], info["type"]) == (f"{REPO}/{SHARD1}", size1, "file")
    assert fs.info(f"{REPO}/sub/notes.txt", refresh=True)["size"] == 5  # paths-info endpoint
    assert fs.isdir(f"{REPO}/sub")
    assert json.loads(fs.cat_file(f"{REPO}/config.json")) == json.loads((repo_dir / "config.json").read_text())
    assert fs.find(REPO) == sorted(f"{REPO}/{p}" for p in
                                   ["config.json", SHARD1, SHARD2, "model.safetensors.index.json", "sub/notes.txt"])


def test_hf_file_system_range_reads_do_not_fetch_whole_shard(hub: FakeHub, repo_dir: Path) -> None:
    data = (repo_dir / SHARD2).read_bytes()
    fs = _fs(hub)
    with fs.open(f"{REPO}@{SHA}/{SHARD2}", "rb", block_size=4096) as f:
        f.seek(100_000)
        assert f.read(64) == data[100_000:100_064]
        f.seek(8)
        assert f.read(16) == data[8:24]
    served = hub.bytes_served(REPO, SHARD2)
    assert 0 < served <= 2 * (4096 + 64) < len(data)
    ranged = [r for r in hub.requests if r.filename == SHARD2 and r.method == "GET"]
    assert ranged and all(r.status == 206 and r.range for r in ranged)
    assert hub.request_count(REPO, SHARD2, method="GET") == len(ranged)
    assert hub.requests_per_path()[f"/{REPO}/resolve/{SHA}/{SHARD2}"] == len(ranged)


def test_raw_http_semantics(hub: FakeHub, repo_dir: Path) -> None:
    data = (repo_dir / SHARD2).read_bytes()
    url = hub.file_url(REPO, SHARD2, revision="v1")
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(data)
        assert head.headers["X-Repo-Commit"] == V1_SHA and head.headers["X-Linked-Size"] == str(len(data))
        part = client.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        assert part.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
        assert client.get(url, headers={"Range": "bytes=-5"}).content == data[-5:]
        assert client.get(url, headers={"Range": f"bytes={len(data) - 3}-"}).content == data[-3:]
        assert client.get(url, headers={"Range": f"bytes={len(data)}-"}).status_code == 416
        missing = client.get(hub.file_url(REPO, "nope.bin"))
        assert missing.status_code == 404 and missing.headers["X-Error-Code"] == "EntryNotFound"
        assert client.get(hub.file_url(REPO, ".git/HEAD")).status_code == 404
        assert client.get(hub.file_url(REPO, "config.json", "bad")).headers["X-Error-Code"] == "RevisionNotFound"
        assert client.get(hub.file_url("org/missing", "config.json")).headers["X-Error-Code"] == "RepoNotFound"


def test_hf_hub_download_and_cache(hub: FakeHub, repo_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "dl_cache"
    path = hf_hub_download(REPO, "config.json", revision="main", endpoint=hub.endpoint, cache_dir=cache, token=False)
    assert Path(path).read_bytes() == (repo_dir / "config.json").read_bytes()
    assert f"snapshots/{SHA}/" in Path(path).as_posix()
    before = len(hub.requests)
    again = hf_hub_download(REPO, "config.json", revision=SHA, endpoint=hub.endpoint, cache_dir=cache, token=False)
    assert again == path and len(hub.requests) == before  # a commit sha in cache needs no request
    # default cache dir (patched into tmp) and a nested file
    nested = hf_hub_download(REPO, "sub/notes.txt", endpoint=hub.endpoint, token=False)
    assert Path(nested).read_text() == "hello" and str(tmp_path / "hf_cache") in nested


def test_safetensors_metadata(hub: FakeHub, repo_dir: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    meta = api.get_safetensors_metadata(REPO, revision=SHA)
    assert meta.sharded and meta.weight_map["b.weight"] == SHARD2
    assert meta.files_metadata[SHARD2].tensors["b.weight"].shape == [256, 256]
    assert meta.files_metadata[SHARD2].tensors["b.bias"].dtype == "F16"
    assert meta.files_metadata[SHARD2].metadata == {"format": "pt"}
    assert hub.bytes_served(REPO, SHARD2) < (repo_dir / SHARD2).stat().st_size  # header probe only
    single = api.get_safetensors_metadata(SINGLE)
    assert not single.sharded and single.files_metadata["model.safetensors"].tensors["w"].shape == [2, 2]


def test_module_level_functions_via_hf_endpoint_env(hub: FakeHub, tmp_path: Path) -> None:
    """Module-level helpers bind the endpoint at import: HF_ENDPOINT must be set before importing."""
    code = textwrap.dedent(f"""
        from huggingface_hub import HfFileSystem, get_safetensors_metadata, hf_hub_download
        meta = get_safetensors_metadata({REPO!r}, revision="v1")
        assert meta.sharded, meta
        assert hf_hub_download({REPO!r}, "config.json", revision="v1").endswith("config.json")
        assert "{REPO}/config.json" in HfFileSystem(token=False).ls({REPO!r}, detail=False)
    """)
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "sub_home"),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_errors_map_to_hub_exceptions(hub: FakeHub, tmp_path: Path) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    kw = {"endpoint": hub.endpoint, "cache_dir": tmp_path / "c", "token": False}
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", **kw)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="nope", **kw)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", **kw)
    assert api.file_exists(REPO, "config.json") and not api.file_exists(REPO, "missing.json")
    assert api.model_info(REPO, revision="v1").sha == V1_SHA
    assert [b.name for b in api.list_repo_refs(REPO).branches] == ["main", "v1"]
    fs = _fs(hub)
    with pytest.raises(FileNotFoundError) as repo_err:
        fs.ls("org/missing")
    assert isinstance(repo_err.value.__cause__, RepositoryNotFoundError)
    with pytest.raises(FileNotFoundError) as rev_err:
        fs.ls(f"{REPO}@nope")
    assert isinstance(rev_err.value.__cause__, RevisionNotFoundError)


def test_fail_after_bytes_drops_then_recovers(hub: FakeHub, repo_dir: Path) -> None:
    data = (repo_dir / SHARD2).read_bytes()
    url = hub.file_url(REPO, SHARD2)
    hub.fail_after_bytes(REPO, SHARD2, after=1000, times=2)
    assert hub.pending_faults(REPO, SHARD2) == 2
    with httpx.Client() as client:
        for _ in range(2):
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(url, headers={"Range": "bytes=0-4999"})
        ok = client.get(url, headers={"Range": "bytes=0-4999"})
    assert ok.status_code == 206 and ok.content == data[:5000]
    assert hub.bytes_served(REPO, SHARD2) == 1000 + 1000 + 5000
    assert [r.dropped for r in hub.requests] == [True, True, False]
    assert hub.pending_faults(REPO, SHARD2) == 0


def test_hub_client_retries_and_final_error(hub: FakeHub, repo_dir: Path, tmp_path: Path,
                                           no_backoff_sleep: None) -> None:
    data = (repo_dir / SHARD2).read_bytes()
    fs = _fs(hub)
    path = f"{REPO}/{SHARD2}"
    fs.info(path)
    hub.reset_stats()
    hub.fail_after_bytes(REPO, SHARD2, after=10, times=2)
    with fs.open(path, "rb", block_size=2048) as f:  # http_backoff retries the range GET
        f.seek(50_000)
        assert f.read(100) == data[50_000:50_100]
    assert hub.request_count(REPO, SHARD2, method="GET") == 3

    hub.fail_after_bytes(REPO, SHARD2, after=10, times=50)
    with pytest.raises(httpx.RemoteProtocolError):
        with fs.open(path, "rb", block_size=2048) as f:
            f.seek(1000)
            f.read(10)
    hub.clear_faults()

    # hf_hub_download's GET retries only 408/429 (not 5xx). After a cut body it retries; it would resume
    # with "Range: bytes=N-", but it buffers 10 MB chunks, so a cut this early restarts from byte 0.
    hub.fail_with_status(REPO, "config.json", status=429, times=2, methods=["GET"])
    hub.fail_after_bytes(REPO, "config.json", after=5, times=1)
    got = hf_hub_download(REPO, "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
    assert Path(got).read_bytes() == (repo_dir / "config.json").read_bytes()
    statuses = [(r.method, r.status, r.range) for r in hub.requests if r.filename == "config.json"]
    assert statuses == [("HEAD", 200, None), ("GET", 429, None), ("GET", 429, None), ("GET", 200, None),
                        ("GET", 200, None)]
    assert hub.requests[-2].dropped
    assert hub.bytes_served(REPO, "config.json") == 5 + (repo_dir / "config.json").stat().st_size

    # HfFileSystem range reads go through http_backoff, which also retries 5xx.
    hub.fail_with_status(REPO, SHARD2, status=503, times=2)
    with fs.open(path, "rb", block_size=2048) as f:
        f.seek(7)
        assert f.read(3) == data[7:10]
    assert hub.pending_faults(REPO, SHARD2) == 0

    # Repo API faults: model_info does not retry, so the status surfaces at once.
    hub.fail_with_status(REPO, status=500, times=1)
    with pytest.raises(HfHubHTTPError) as api_err:
        HfApi(endpoint=hub.endpoint, token=False).model_info(REPO)
    assert api_err.value.response.status_code == 500
    assert HfApi(endpoint=hub.endpoint, token=False).model_info(REPO).sha == SHA


# ----------------------------------------------------------------------------- CDN, pacing, Retry-After


def test_redirect_to_cdn_like_the_hub(hub: FakeHub, repo_dir: Path, tmp_path: Path) -> None:
    """/resolve/ answers 302 to a signed URL on another host; the client follows with Range and without the token."""
    from huggingface_hub import get_hf_file_metadata

    data = (repo_dir / SHARD2).read_bytes()
    cdn = hub.redirect_to_cdn()
    assert cdn.startswith("http://127.0.0.2:")
    meta = get_hf_file_metadata(hub.file_url(REPO, SHARD2), token="hf_secret")
    assert meta.location.startswith(cdn) and meta.size == len(data) and meta.commit_hash == SHA
    with httpx.Client(follow_redirects=True) as client:
        got = client.get(hub.file_url(REPO, SHARD2), headers={"Range": "bytes=100-199",
                                                              "Authorization": "Bearer hf_secret"})
    assert got.status_code == 206 and got.content == data[100:200]
    first, second = hub.requests[-2:]
    assert (first.host, first.status, first.authorization) == ("hub", 302, True)
    assert (second.host, second.status, second.range, second.authorization) == ("cdn", 206, "bytes=100-199", False)
    assert second.filename == SHARD2 and hub.bytes_served(REPO, SHARD2) == 100
    # small (non-LFS) files are served by the Hub itself, and huggingface_hub downloads through the redirect
    assert hf_hub_download(REPO, "config.json", endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
    path = hf_hub_download(REPO, SHARD2, endpoint=hub.endpoint, cache_dir=tmp_path / "c", token=False)
    assert Path(path).read_bytes() == data


def test_signed_urls_expire(hub: FakeHub, repo_dir: Path) -> None:
    from huggingface_hub import get_hf_file_metadata

    hub.redirect_to_cdn(uses=1)
    location = get_hf_file_metadata(hub.file_url(REPO, SHARD2)).location
    with httpx.Client() as client:
        assert client.get(location, headers={"Range": "bytes=0-9"}).status_code == 206
        assert client.get(location, headers={"Range": "bytes=0-9"}).status_code == 403  # used up
        hub.redirect_to_cdn()  # unlimited from now on
        fresh = get_hf_file_metadata(hub.file_url(REPO, SHARD2)).location
        assert fresh != location and client.get(fresh, headers={"Range": "bytes=0-9"}).status_code == 206
        hub.expire_signed_urls()
        assert client.get(fresh, headers={"Range": "bytes=0-9"}).status_code == 403


def test_pacing_caps_each_response(hub: FakeHub, repo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 kB at 1 MB/s: the server holds each chunk back until 1 MB/s of elapsed time covers it.

    The fake Hub's clock is replaced by one that only its own sleeps advance, so the sleeps
    add up to exactly bytes / rate however fast the machine is.
    """
    import fake_hub

    class Clock:
        now = 0.0
        slept: list[float] = []

        def monotonic(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)
            self.now += seconds
    clock = Clock()
    monkeypatch.setattr(fake_hub, "time", clock)
    hub.pace(1_000_000)
    with httpx.Client() as client:
        got = client.get(hub.file_url(REPO, SHARD2), headers={"Range": "bytes=0-199999"})
    assert got.status_code == 206 and got.content == (repo_dir / SHARD2).read_bytes()[:200_000]
    assert sum(clock.slept) == pytest.approx(0.2) and len(clock.slept) == 4  # 64 KiB chunks, the first held too
    hub.pace(None)
    clock.slept.clear()
    client = httpx.Client()
    assert client.get(hub.file_url(REPO, SHARD2), headers={"Range": "bytes=0-199999"}).status_code == 206
    client.close()
    assert clock.slept == []


def test_status_fault_with_retry_after(hub: FakeHub) -> None:
    hub.fail_with_status(REPO, SHARD2, status=429, times=1, methods=["GET"], retry_after=3)
    with httpx.Client() as client:
        first = client.get(hub.file_url(REPO, SHARD2), headers={"Range": "bytes=0-9"})
        second = client.get(hub.file_url(REPO, SHARD2), headers={"Range": "bytes=0-9"})
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert second.status_code == 206 and "Retry-After" not in second.headers
