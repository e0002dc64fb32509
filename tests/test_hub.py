"""Hub in and out without the network: a local Hugging Face cache (HF_HOME in tmp_path, HF_HUB_OFFLINE=1) laid out
as huggingface_hub writes it (blobs + snapshot symlinks + refs), and the upload mocked at the HfApi boundary."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from poseidon_upstream import upstream_state, write_upstream

from sciformer import cli, hub, models
from sciformer.errors import CheckpointError

UP = dict(num_channels=4, num_out_channels=4, image_size=16, patch_size=2, embed_dim=12, depths=[1, 1],
          num_heads=[3, 3], skip_connections=[1, 0], window_size=4, use_conditioning=True)


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return home


def cache_repo(home: Path, repo_id: str, files: dict[str, bytes | Path], revision: str = "main",
               commit: str | None = None) -> str:
    """Put ``files`` into the Hub cache under ``home`` as snapshot ``commit`` that ``revision`` points to."""
    commit = commit or hashlib.sha1(repr(sorted(files)).encode() + revision.encode()).hexdigest()
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return commit


def _folder(path: Path) -> dict[str, Path]:
    return {p.name: p for p in path.iterdir() if p.is_file()}


def test_the_fixture_is_a_cache_huggingface_hub_reads(hf_home, tmp_path):
    from huggingface_hub import scan_cache_dir

    commit = cache_repo(hf_home, "org/name", {"config.json": b"{}"}, revision="v1")
    info = scan_cache_dir(hf_home / "hub")
    (repo,) = info.repos
    (rev,) = repo.revisions
    assert repo.repo_id == "org/name" and rev.commit_hash == commit and rev.refs == {"v1"}
    assert {f.file_name for f in rev.files} == {"config.json"}


def test_a_hub_id_converts(hf_home, tmp_path, capsys):
    model = write_upstream(tmp_path / "up", UP)
    cache_repo(hf_home, "camlab-ethz/Poseidon-tiny", {
        **_folder(tmp_path / "up"),
        "pytorch_model.bin": b"not read: safetensors are preferred"})  # a pickle next to safetensors is never read
    out = tmp_path / "converted"
    assert cli.main(["convert", "poseidon", "camlab-ethz/Poseidon-tiny", str(out)]) == 0, capsys.readouterr().err
    meta = json.loads((out / "config.json").read_text())
    assert meta["source"]["path"] == "hf://camlab-ethz/Poseidon-tiny"
    card = (out / "README.md").read_text()  # the converted folder is Hub-ready too
    assert "sciformer convert poseidon hf://camlab-ethz/Poseidon-tiny OUT" in card and "- poseidon" in card
    x, t = torch.randn(2, 4, 16, 16), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(models.load(out)(x, t), model.eval()(x, t))


def test_a_hub_id_with_only_a_bin_converts_with_weights_only(hf_home, tmp_path):
    model = write_upstream(tmp_path / "up", UP, seed=1)
    torch.save(upstream_state(model), tmp_path / "pytorch_model.bin")
    cache_repo(hf_home, "org/poseidon-bin", {"config.json": tmp_path / "up" / "config.json",
                                             "pytorch_model.bin": tmp_path / "pytorch_model.bin"})
    out = tmp_path / "converted"
    assert cli.main(["convert", "poseidon", "hf://org/poseidon-bin", str(out)]) == 0
    x, t = torch.randn(1, 4, 16, 16), torch.rand(1)
    with torch.no_grad():
        torch.testing.assert_close(models.load(out)(x, t), model.eval()(x, t))


def _export(tmp_path, name: str, seed: int) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = models.get("factformer-2d-tiny", in_channels=2, out_channels=2)
    return models.save(model, tmp_path / name, extra={"data_spec": {"inputs": ["u", "v"]}}), model.eval()


def test_load_an_export_from_the_hub_at_a_revision(hf_home, tmp_path):
    main, m_main = _export(tmp_path, "main", 0)
    tagged, m_tag = _export(tmp_path, "tagged", 1)
    cache_repo(hf_home, "org/ff", _folder(main))
    commit = cache_repo(hf_home, "org/ff", _folder(tagged), revision="v1")
    x, t = torch.randn(1, 2, 8, 8), torch.rand(1)
    with torch.no_grad():
        torch.testing.assert_close(models.load("hf://org/ff")(x, t), m_main(x, t))
        torch.testing.assert_close(models.load("hf://org/ff@v1")(x, t), m_tag(x, t))
        torch.testing.assert_close(models.load(f"hf://org/ff@{commit}")(x, t), m_tag(x, t))
    assert hub.resolve("hf://org/ff").parent.name == "snapshots"  # the Hub's own cache, no copy of ours


@pytest.mark.parametrize("case", ["offline, not cached", "missing revision", "repo without the files",
                                  "poseidon repo without weights"])
def test_each_hub_failure_is_one_clear_error(case, hf_home, tmp_path, capsys):
    exported, _ = _export(tmp_path, "e", 0)
    cache_repo(hf_home, "org/ff", _folder(exported))
    cache_repo(hf_home, "org/readme-only", {"README.md": b"# nothing here\n"})
    cache_repo(hf_home, "org/config-only", {"config.json": json.dumps(UP).encode()})
    argv, message = {
        "offline, not cached": (["export", "hf://org/absent", str(tmp_path / "o")],
                                "hf://org/absent: not in the Hugging Face cache"),
        "missing revision": (["export", "hf://org/ff@v9", str(tmp_path / "o")],
                             "revision 'v9' is not in the cache (cached: main"),
        "repo without the files": (["export", "hf://org/readme-only", str(tmp_path / "o")],
                                   "has no config.json; it is not a sciformer export"),
        "poseidon repo without weights": (["convert", "poseidon", "org/config-only", str(tmp_path / "o")],
                                          "holds no model.safetensors or pytorch_model.bin in the cache"),
    }[case]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_local_path_is_never_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not hub.is_hub_ref("org/name") and hub.is_hub_ref("org/other") and hub.is_hub_ref("hf://org/name")
    assert hub.parse(Path("hf://org/name@v1")) == hub.HubRef("org/name", "v1")  # a Path collapses '//'
    with pytest.raises(CheckpointError, match="not a Hub model id"):
        hub.parse("hf://just-a-name")


@pytest.fixture
def uploads(monkeypatch):
    """HfApi's create_repo/upload_folder replaced: the calls are recorded, with the folder's files at that time."""
    from huggingface_hub import HfApi

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kw):
        calls.append(("upload_folder", repo_id, {**kw, "folder_path": str(folder_path),
                                                 "files": sorted(p.name for p in Path(folder_path).iterdir())}))
        return f"https://huggingface.co/{repo_id}/commit/0123"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_export_push_uploads_the_folder_with_its_card(tmp_path, uploads, capsys):
    exported, _ = _export(tmp_path, "e", 0)
    out = tmp_path / "hub-ready"
    assert cli.main(["export", str(exported), str(out), "--push", "my-org/ff-tiny", "--private", "true"]) == 0
    (create, upload) = uploads
    assert create == ("create_repo", "my-org/ff-tiny", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert upload[0:2] == ("upload_folder", "my-org/ff-tiny")
    assert upload[2]["folder_path"] == str(out) and upload[2]["repo_type"] == "model"
    assert upload[2]["files"] == ["README.md", "config.json", "model.safetensors"]
    assert 'sciformer.models.load("hf://my-org/ff-tiny")' in (out / "README.md").read_text()
    assert "pushed" in capsys.readouterr().out


def test_a_refused_push_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    def refuse(self, repo_id, **kw):
        response = httpx.Response(403, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))
        raise HfHubHTTPError("403 Forbidden: you have no write access to my-org", response=response)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    exported, _ = _export(tmp_path, "e", 0)
    assert cli.main(["export", str(exported), str(tmp_path / "out"), "--push", "my-org/x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--push my-org/x: the Hub refused the upload" in err
    assert (tmp_path / "out" / "README.md").is_file()  # the export itself is kept


def test_export_onnx_flag_calls_the_onnx_exporter(tmp_path, monkeypatch):
    onnx_export = pytest.importorskip("sciformer.onnx_export")
    seen = []

    def fake(export_dir, **kw):
        seen.append((Path(export_dir), kw))
        (Path(export_dir) / "model.onnx").write_bytes(b"")
        return Path(export_dir) / "model.onnx"

    monkeypatch.setattr(onnx_export, "export_onnx", fake)
    exported, _ = _export(tmp_path, "e", 0)
    assert cli.main(["export", str(exported), str(tmp_path / "out"), "--onnx"]) == 0  # a bare --onnx means true
    assert cli.main(["export", str(exported), str(tmp_path / "out2"), "--onnx", "--opset", "18"]) == 0
    assert cli.main(["export", str(exported), str(tmp_path / "out3")]) == 0
    assert seen == [(tmp_path / "out", {}), (tmp_path / "out2", {"opset": 18})]


def test_no_network_was_needed(hf_home, tmp_path):
    """HF_HUB_OFFLINE=1 set late (after huggingface_hub was imported) still keeps every call off the network."""
    exported, _ = _export(tmp_path, "e", 0)
    cache_repo(hf_home, "org/ff", _folder(exported))
    shutil.rmtree(tmp_path / "e")
    assert hub._offline()
    assert (hub.resolve("org/ff") / "model.safetensors").is_file()


@pytest.mark.parametrize("error, message", [
    ("RepositoryNotFoundError", "hf://org/ff@v9: no such model repo on the Hub (or it is private"),
    ("RevisionNotFoundError", "hf://org/ff@v9: the Hub has no revision 'v9' of org/ff"),
    ("RemoteEntryNotFoundError", "hf://org/ff@v9: the repo has no config.json; it is not a sciformer export"),
    ("GatedRepoError", "hf://org/ff@v9: a gated repo; accept its conditions"),
])
def test_online_hub_answers_are_one_clear_error_each(error, message, tmp_path, monkeypatch, capsys):
    """What the Hub answers when online (the HTTP errors huggingface_hub raises), without the network."""
    import httpx
    import huggingface_hub
    from huggingface_hub import errors

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def answer(repo_id, filename, **kw):
        assert kw["revision"] == "v9" and kw["local_files_only"] is False
        response = httpx.Response(404, request=httpx.Request("GET", f"https://huggingface.co/{repo_id}/{filename}"))
        raise getattr(errors, error)(f"404 for {filename}", response=response)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", answer)
    assert cli.main(["export", "hf://org/ff@v9", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
