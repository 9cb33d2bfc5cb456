"""Archives as an attacker builds them: zip and tgz bombs, manifests that forge log lines or
name missing handler files, links inside an archive; and the store's own symlinks, which
are served."""

from __future__ import annotations

import io
import json
import stat
import tarfile
import zipfile
from pathlib import Path

from tests.integration.server import model_handlers as handlers
from tests.support.server import build_archive

from .conftest import World, assert_refused

#: 80 MiB of zeros: well past the 64 MiB any archive may always expand to.
BOMB_BYTES = 80 << 20


def _manifest(name: str, **model: str) -> bytes:
    fields = {"modelName": name, "modelVersion": "1.0", "handler": "handler.py", **model}
    return json.dumps({"runtime": "python", "model": fields}).encode()


def _zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _members(name: str, **model: str) -> dict[str, bytes]:
    return {
        "MAR-INF/MANIFEST.json": _manifest(name, **model),
        "handler.py": handlers.ECHO.encode(),
    }


def _extracted_bytes(world: World) -> int:
    """Bytes under the server's private extraction folders."""
    tmp = world.server.tmpdir
    assert tmp is not None
    return sum(p.stat().st_size for p in tmp.glob("torchwick-models-*/**/*") if p.is_file())


# ------------------------------------------------------------------------------------ bombs
def test_a_zip_bomb_is_stopped(world: World) -> None:
    bomb = _zip(world.store / "zipbomb.mar", {**_members("zipbomb"), "w.bin": bytes(BOMB_BYTES)})
    assert bomb.stat().st_size < 1 << 20
    before = _extracted_bytes(world)
    response = world.register("zipbomb.mar")
    assert_refused(response, 400, "w.bin", "max_archive_compression_ratio")
    assert _extracted_bytes(world) <= before


def test_a_tgz_bomb_is_stopped(world: World) -> None:
    members = {f"m/{k}": v for k, v in _members("tgzbomb").items()}
    bomb = _tgz(world.store / "tgzbomb.tar.gz", {**members, "m/w.bin": bytes(BOMB_BYTES)})
    assert bomb.stat().st_size < 1 << 20
    before = _extracted_bytes(world)
    response = world.register("tgzbomb.tar.gz")
    assert_refused(response, 400, "w.bin", "max_archive_compression_ratio")
    assert _extracted_bytes(world) <= before


# --------------------------------------------------------------------------------- manifests
def test_a_model_version_with_a_path_is_refused(world: World) -> None:
    _zip(world.store / "badversion.mar", _members("badversion", modelVersion="1.0/../../x"))
    assert_refused(world.register("badversion.mar"), 400, "modelVersion", "may not contain '/'")


def test_a_model_version_that_forges_log_lines_is_refused(world: World) -> None:
    members = _members("forgedversion", modelVersion="1.0\nINFO forged")
    _zip(world.store / "forgedversion.mar", members)
    body = assert_refused(world.register("forgedversion.mar"), 400, "modelVersion")
    assert "\n" not in body["message"]


def test_a_model_name_with_a_trailing_newline_is_refused(world: World) -> None:
    _zip(world.store / "forgedname.mar", _members("forgedname\n"))
    assert_refused(world.register("forgedname.mar"), 400, "modelName")


def test_a_missing_handler_file_is_a_400_at_registration(world: World) -> None:
    members = {"MAR-INF/MANIFEST.json": _manifest("nohandler", handler="missing.py")}
    _zip(world.store / "nohandler.mar", members)
    response = world.register("nohandler.mar", initial_workers="1", synchronous="true")
    assert_refused(response, 400, "missing.py", "not in the archive")


def test_builtin_and_module_function_handlers_still_register(world: World) -> None:
    builtin = {"MAR-INF/MANIFEST.json": _manifest("builtin", handler="base_handler")}
    _zip(world.store / "builtin.mar", builtin)
    # No workers: base_handler needs weights this archive does not have; the point is that
    # the archive check accepts a built-in handler name.
    assert world.register("builtin.mar", initial_workers="0").status_code == 200
    world.unregister("builtin")
    module = {
        "MAR-INF/MANIFEST.json": _manifest("modfn", handler="echo_mod:handle"),
        "echo_mod.py": handlers.ECHO.encode(),
    }
    _zip(world.store / "modfn.mar", module)
    response = world.register("modfn.mar", initial_workers="1", synchronous="true")
    assert response.status_code == 200, response.text
    answer = world.server.client("inference").post("/predictions/modfn", content=b"hi")
    assert answer.status_code == 200 and answer.content == b"hi"
    world.unregister("modfn")


def test_a_link_inside_an_archive_is_refused(world: World) -> None:
    _zip(world.store / "inlink.mar", _members("inlink"), links={"w.bin": "/etc/passwd"})
    assert_refused(world.register("inlink.mar"), 400, "w.bin", "symbolic link")


# ---------------------------------------------------------------------------- store symlinks
def test_store_entries_that_are_symlinks_are_served(world: World) -> None:
    archive = build_archive(world.shared, "linked", handlers.ECHO)
    (world.store / "linked.mar").symlink_to(archive)
    folder = world.shared / "more"
    folder.mkdir()
    build_archive(folder, "viafolder", handlers.ECHO)
    (world.store / "morelink").symlink_to(folder)
    for url, name in (("linked.mar", "linked"), ("morelink/viafolder.mar", "viafolder")):
        response = world.register(url)
        assert response.status_code == 200, response.text
        described = world.mgmt.get(f"/models/{name}").json()[0]
        assert described["modelUrl"] == url
        world.unregister(name)
    assert archive.exists()  # unregistering never deletes what the store links to


def test_a_dangling_store_symlink_is_a_404_naming_it(world: World) -> None:
    (world.store / "dangling.mar").symlink_to(world.shared / "never-built.mar")
    assert_refused(world.register("dangling.mar"), 404, "dangling.mar", "symbolic link")
