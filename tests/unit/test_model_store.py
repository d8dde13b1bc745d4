"""The model store at an fsspec URL (issue 26): serving reads models without the trainer's volume.

Real fsspec filesystems (`memory://`, `file://`) and the real Redis; tiny GPT-2 models built by the
project (`build_default`), loaded offline with `AutoModelForCausalLM.from_pretrained`."""

from __future__ import annotations

import json
import uuid

import fsspec
import pytest
import redis
from fsspec.implementations.memory import MemoryFileSystem

from trainer import card
from trainer.model import build_default, file_hashes, load, save
from trainer.registry import META_FILE, Registry

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

CORPUS = ["what is two plus two", "four", "select count star from users", "the answer is four"] * 20
META = {"status": "candidate", "dataset_id": "ds-window-1", "lineage": ["ds-window-1"], "base_model": "v0000"}


@pytest.fixture
def client(redis_url):
    r = redis.Redis.from_url(redis_url)
    apps: list[str] = []
    yield r, apps
    for app in apps:
        for key in r.scan_iter(f"{app}:*"):
            r.delete(key)
    r.close()


@pytest.fixture
def memory_url():
    url = f"memory://models-{uuid.uuid4().hex[:8]}"
    yield url
    fs, root = fsspec.core.url_to_fs(url)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _registry(client, url: str, cache) -> Registry:
    r, apps = client
    app = f"model-store-{uuid.uuid4().hex[:8]}"
    apps.append(app)
    return Registry(url, r, app, cache_dir=str(cache))


def _register(reg: Registry, seed: int = 0, meta: dict | None = None):
    loaded = build_default(CORPUS, seed=seed)
    version = reg.next_version()
    staged = reg.staging(version)
    save(loaded, staged)
    reg.register(version, staged, {**(meta or META), "file_hashes": file_hashes(staged)})
    return version, loaded


def _logits(model, tokenizer):
    ids = tokenizer("what is two plus two", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model.to("cpu").eval()(ids).logits  # eval: no dropout


def _store_files(url: str, rel: str) -> set[str]:
    fs, root = fsspec.core.url_to_fs(url)
    base = f"{root.rstrip('/')}/{rel}"
    return {f[len(base) + 1 :] for f in fs.find(base)}


@pytest.fixture(params=["memory", "file"])
def store(request, client, memory_url, tmp_path):
    """A registry on a memory:// store or a file:// URL, with its URL."""
    url = memory_url if request.param == "memory" else (tmp_path / "store").as_uri()
    return _registry(client, url, tmp_path / "cache"), url


def test_register_list_show_and_load_from_a_url(store, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reg, url = store
    version, loaded = _register(reg)
    assert reg.versions() == [version] and [m["version"] for m in reg.list()] == [version]
    meta = reg.show(version)
    assert meta["lineage"] == ["ds-window-1"] and meta["path"] == reg.url(version)
    files = _store_files(url, version)
    assert {META_FILE, "README.md", "config.json", "model.safetensors", "tokenizer.json"} <= files
    assert set(meta["file_hashes"]) <= files
    path = reg.path(version)  # memory://: downloaded into the cache; file://: the store's own directory
    assert (path / "config.json").exists()
    if url.startswith("file://"):
        assert path == tmp_path / "store" / version and not (tmp_path / "cache").exists()
    else:
        assert tmp_path / "cache" in path.parents
    assert file_hashes(path) == {
        **meta["file_hashes"],
        **{k: v for k, v in file_hashes(path).items() if k in (META_FILE, "README.md")},
    }
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert torch.equal(_logits(model, tokenizer), _logits(loaded.model, loaded.tokenizer))
    assert load(path, prefer_gpu=False).parameters == loaded.parameters
    reg.set_production(version)
    assert reg.production() == version


def test_a_reader_elsewhere_downloads_a_version_once_into_its_own_cache(client, memory_url, tmp_path):
    writer = _registry(client, memory_url, tmp_path / "trainer-cache")
    version, loaded = _register(writer)
    # serving: another registry on the same store and Redis, another disk; nothing of the trainer's
    reader = Registry(memory_url, writer.redis, writer.meta_key.split(":")[0], cache_dir=str(tmp_path / "serve-cache"))
    assert reader.versions() == [version]
    path = reader.path(version)
    assert tmp_path / "serve-cache" in path.parents
    assert reader.path(version) == path  # the second call takes the cached copy
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert reader.path(version) == path and (path / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".download-")]
    model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert torch.equal(_logits(model, tokenizer), _logits(loaded.model, loaded.tokenizer))
    # a second store with its own v0001 never shares the first store's cached copy
    other = _registry(client, memory_url + "-other", tmp_path / "serve-cache")
    other_version, _ = _register(other, seed=1)
    assert other_version == "v0001" == version and other.path(other_version) != path
    assert file_hashes(other.path(other_version))["model.safetensors"] != file_hashes(path)["model.safetensors"]
    MemoryFileSystem().rm(fsspec.core.url_to_fs(memory_url + "-other")[1], recursive=True)


def test_show_reads_the_store_when_redis_has_no_record_and_flags_rewrite_it(client, memory_url, tmp_path):
    reg = _registry(client, memory_url, tmp_path / "cache")
    version, _ = _register(reg)
    reg.redis.hdel(reg.meta_key, version)
    assert reg.show(version)["version"] == version  # from flywheel-model.json in the store
    reg.redis.hset(reg.meta_key, version, json.dumps(reg.show(version)))
    assert reg.flag_erasure(version, ["ds-window-1"], retire=True)
    fs, root = fsspec.core.url_to_fs(memory_url)
    stored = json.loads(fs.cat_file(f"{root}/{version}/{META_FILE}"))
    assert stored["tainted_by_erasure"] == ["ds-window-1"] and stored["retire"] is True
    assert json.loads((reg.path(version) / META_FILE).read_text())["retire"] is True
    with pytest.raises(KeyError):
        reg.show("v0099")
    with pytest.raises(KeyError):
        reg.set_production("v0099")
    with pytest.raises(FileNotFoundError):
        reg.path("v0099")


class _FailingMemory(MemoryFileSystem):
    """A memory filesystem whose upload of one file name fails: a crash in the middle of an upload."""

    protocol = "failmem"
    fail_on = "tokenizer.json"

    def put_file(self, lpath, rpath, *args, **kwargs):
        if rpath.endswith("/" + self.fail_on):
            raise OSError(f"connection reset while writing {rpath}")
        return super().put_file(lpath, rpath, *args, **kwargs)


def test_an_upload_cut_short_is_never_a_registered_model(client, tmp_path):
    fsspec.register_implementation("failmem", _FailingMemory, clobber=True)
    url = f"failmem://models-{uuid.uuid4().hex[:8]}"
    reg = _registry(client, url, tmp_path / "cache")
    loaded = build_default(CORPUS)
    version = reg.next_version()
    staged = reg.staging(version)
    save(loaded, staged)
    with pytest.raises(OSError, match="connection reset"):
        reg.register(version, staged, {**META, "file_hashes": file_hashes(staged)})
    files = _store_files(url, version)
    assert "config.json" in files and META_FILE not in files  # half written, without its metadata
    assert reg.versions() == []
    with pytest.raises(KeyError):
        reg.show(version)
    with pytest.raises(KeyError):
        reg.set_production(version)
    with pytest.raises(FileNotFoundError):
        reg.path(version)
    _FailingMemory.fail_on = "no-such-file"
    try:
        reg.register(version, staged, {**META, "file_hashes": file_hashes(staged)})  # the retry replaces it
    finally:
        _FailingMemory.fail_on = "tokenizer.json"
    assert reg.versions() == [version] and META_FILE in _store_files(url, version)
    fs, root = fsspec.core.url_to_fs(url)
    fs.rm(root, recursive=True)


def test_export_a_version_from_a_url_store_to_a_url_and_load_it_back(store, client, memory_url, tmp_path):
    reg, _ = store
    version, loaded = _register(reg)
    meta = {**reg.show(version), "status": "production"}
    dest = f"memory://export-{uuid.uuid4().hex[:8]}/{version}"
    assert card.export(reg.path(version), dest, meta) == dest
    fs, root = fsspec.core.url_to_fs(dest)
    assert "Status: production." in fs.cat_file(f"{root}/README.md").decode()
    local = tmp_path / "fetched"
    fs.get(root + "/", str(local), recursive=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(local, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(local, local_files_only=True)
    assert torch.equal(_logits(model, tokenizer), _logits(loaded.model, loaded.tokenizer))
    with pytest.raises(FileExistsError, match="not empty"):
        card.export(reg.path(version), dest, meta)
    fs.rm(root.rsplit("/", 1)[0], recursive=True)
    file_dest = (tmp_path / "file-export" / version).as_uri()
    card.export(reg.path(version), file_dest, meta)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path / "file-export" / version, local_files_only=True
    )
    assert model.config.model_type == "gpt2"


def test_an_imported_base_in_a_url_store_resolves_to_a_local_copy(client, memory_url, tmp_path):
    reg = _registry(client, memory_url, tmp_path / "cache")
    staged = reg.staging("base-tiny")
    save(build_default(CORPUS), staged)
    reg.register_base("tiny", staged, {"base_kind": "pretrained", "source": "test"})
    stored = reg.base("tiny")["path"]  # a URL that opens the base's directory in the store
    assert reg.bases() == ["tiny"] and stored.startswith("memory://") and stored.endswith("/bases/tiny")
    fs, root = fsspec.core.url_to_fs(stored)
    assert fs.exists(f"{root}/config.json") and fs.exists(f"{root}/{META_FILE}")
    reader = Registry(memory_url, reg.redis, reg.meta_key.split(":")[0], cache_dir=str(tmp_path / "other"))
    path, kind = reader.resolve_base("tiny")
    assert kind == "pretrained" and tmp_path / "other" in path.parents and (path / "config.json").exists()
    assert transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True).config.model_type == "gpt2"


def test_a_local_store_keeps_its_layout_and_a_file_url_reads_it(client, tmp_path):
    local = _registry(client, str(tmp_path / "models"), tmp_path / "cache")
    version, _ = _register(local)
    assert local.path(version) == tmp_path / "models" / version
    assert local.show(version)["path"] == str(tmp_path / "models" / version)
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [version]  # the staging was renamed away
    as_url = Registry((tmp_path / "models").as_uri(), local.redis, local.meta_key.split(":")[0])
    assert as_url.path(version) == local.path(version) and as_url.show(version) == local.show(version)
    assert not (tmp_path / "cache").exists()


def test_the_cli_lists_shows_and_exports_from_a_url_store(
    client, redis_url, memory_url, tmp_path, monkeypatch, capsys
):
    """`flywheel models` as it is, with FLYWHEEL_MODEL_STORE at a URL: the cache from the settings."""
    from flywheel.cli import main

    r, apps = client
    app = f"model-store-{uuid.uuid4().hex[:8]}"
    apps.append(app)
    reg = Registry(memory_url, r, app, cache_dir=str(tmp_path / "trainer-cache"))
    version, loaded = _register(reg)
    monkeypatch.setenv("FLYWHEEL_REDIS_URL", redis_url)
    monkeypatch.setenv("FLYWHEEL_APP_ID", app)
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FLYWHEEL_MODEL_STORE", memory_url)
    monkeypatch.delenv("FLYWHEEL_MODEL_CACHE", raising=False)
    monkeypatch.delenv("FLYWHEEL_KAFKA_BOOTSTRAP", raising=False)
    assert main(["models", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == version
    assert main(["models", "show", version]) == 0
    assert json.loads(capsys.readouterr().out)["path"] == reg.url(version)
    dest = f"memory://cli-export-{uuid.uuid4().hex[:8]}/{version}"
    assert main(["models", "export", version, dest]) == 0
    assert json.loads(capsys.readouterr().out) == {"version": version, "exported_to": dest}
    assert (tmp_path / "data" / "model-cache").is_dir()  # FLYWHEEL_MODEL_CACHE's default
    fs, root = fsspec.core.url_to_fs(dest)
    fs.get(root + "/", str(tmp_path / "served"), recursive=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "served", local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "served", local_files_only=True)
    assert torch.equal(_logits(model, tokenizer), _logits(loaded.model, loaded.tokenizer))
    assert main(["models", "export", "v0099", f"{dest}-missing"]) == 2
    assert "v0099" in capsys.readouterr().err
    fs.rm(root, recursive=True)


def test_a_download_that_does_not_match_its_file_hashes_is_refused_and_removed(client, memory_url, tmp_path):
    writer = _registry(client, memory_url, tmp_path / "trainer-cache")
    version, _ = _register(writer)
    fs, root = fsspec.core.url_to_fs(memory_url)
    weights = f"{root}/{version}/model.safetensors"
    good = fs.cat_file(weights)
    fs.pipe_file(weights, good[:-1] + bytes([good[-1] ^ 0xFF]))  # one flipped byte in the store
    cache = tmp_path / "serve-cache"
    reader = Registry(memory_url, writer.redis, writer.meta_key.split(":")[0], cache_dir=str(cache))
    with pytest.raises(ValueError, match=rf"{version}: model\.safetensors does not match its sha256"):
        reader.path(version)
    mirror = reader.root
    assert not (mirror / version).exists()
    assert not [p for p in mirror.iterdir() if p.name.startswith(".download-")]  # the partial copy removed
    fs.rm(weights)  # a listed file missing from the store: refused too
    with pytest.raises(ValueError, match=rf"{version}: model\.safetensors is listed .* but missing"):
        reader.path(version)
    assert not (mirror / version).exists()
    fs.pipe_file(weights, good)  # the right bytes back: the same reader downloads and loads it
    path = reader.path(version)
    assert (
        path == mirror / version
        and file_hashes(path)["model.safetensors"] == file_hashes(writer.path(version))["model.safetensors"]
    )
    assert load(path, prefer_gpu=False).parameters > 0


def test_metadata_without_file_hashes_is_downloaded_as_it_is(client, memory_url, tmp_path):
    writer = _registry(client, memory_url, tmp_path / "trainer-cache")
    loaded = build_default(CORPUS, seed=0)
    version = writer.next_version()
    staged = writer.staging(version)
    save(loaded, staged)
    writer.register(version, staged, dict(META))  # an older registration: no file_hashes
    reader = Registry(memory_url, writer.redis, writer.meta_key.split(":")[0], cache_dir=str(tmp_path / "serve"))
    assert (reader.path(version) / "config.json").exists()
