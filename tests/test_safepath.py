"""Nothing outside its folder (issue 29, item 1): a name read back from a record on disk is
followed only through :func:`trm_lib.utils.safepath.inside`.

The case that failed: a feature-store manifest whose ``file`` field was ``../../../x.npy`` was
followed on resume, an ``.npy`` outside the cache was overwritten and the store marked complete
pointing at it. Now such a store is recomputed with a one-line warning and the outside file is
left byte for byte as it was.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_reliability import _images, backbone  # noqa: F401 - the tiny backbone fixture

from trm_lib.utils.errors import FileError
from trm_lib.utils.safepath import inside


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.npy", "a/../../x.npy", "", "a\x00b"])
def test_inside_refuses_names_that_leave_the_folder(tmp_path, name):
    with pytest.raises(FileError, match=rf"^{tmp_path / 'm.json'}: field 'arrays.g.file'"):
        inside(tmp_path, name, field="arrays.g.file", record=tmp_path / "m.json")


def test_inside_refuses_a_symlink_out_and_keeps_what_stays_in(tmp_path):
    outside = tmp_path / "outside.npy"
    outside.write_bytes(b"x")
    folder = tmp_path / "store"
    (folder / "sub").mkdir(parents=True)
    (folder / "link.npy").symlink_to(outside)
    (folder / "sub" / "up").symlink_to(tmp_path)
    for name in ("link.npy", "sub/up/outside.npy"):
        with pytest.raises(FileError, match="leads outside .* through a symlink"):
            inside(folder, name)
    (folder / "in.npy").symlink_to(folder / "sub")  # a symlink that stays inside is fine
    assert inside(folder, "in.npy") == folder / "in.npy"
    assert inside(folder, "sub/a.npy") == folder / "sub" / "a.npy"
    assert inside(folder, "missing.npy") == folder / "missing.npy"  # need not exist yet


def _incomplete_store(backbone, tmp_path):  # noqa: F811 - the fixture
    """A complete store turned back into an interrupted one (3 of 6 rows), as a resume sees."""
    from trm_lib.backbone.features import compute_features

    dataset = _images(tmp_path / "data")
    store = compute_features(backbone, dataset, cache_root=tmp_path / "cache", progress=False)
    want = np.array(store.dense)
    manifest_file = store.path / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(complete=False, completed=3)
    for spec in manifest["arrays"].values():
        spec.pop("checksum", None)
    return dataset, store.path, manifest, manifest_file, want


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_a_manifest_naming_a_file_outside_the_store_never_writes_there(backbone, tmp_path,  # noqa: F811
                                                                       capsys, how):
    from trm_lib.backbone.features import compute_features

    dataset, folder, manifest, manifest_file, want = _incomplete_store(backbone, tmp_path)
    victim = tmp_path / "victim.npy"  # an .npy of the same shape outside the cache
    np.save(victim, np.zeros_like(want))
    before = victim.read_bytes()
    if how == "symlink":
        (folder / "dense.npy").unlink()
        (folder / "dense.npy").symlink_to(victim)
    else:
        manifest["arrays"]["dense"]["file"] = (os.path.relpath(victim, folder) if how == "dotdot"
                                               else str(victim))
    manifest_file.write_text(json.dumps(manifest))
    capsys.readouterr()
    again = compute_features(backbone, dataset, cache_root=tmp_path / "cache", progress=False)
    assert victim.read_bytes() == before  # untouched
    assert victim.exists() and not (folder / "dense.npy").is_symlink()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"warning: {manifest_file}: field "
                                                       f"'arrays.dense.file'"), warning
    assert "recomputing the feature store" in warning[0]
    np.testing.assert_array_equal(again.dense, want)
    assert json.loads(manifest_file.read_text())["arrays"]["dense"]["file"] == "dense.npy"


def test_opening_a_store_whose_manifest_points_outside_is_one_error(backbone, tmp_path):  # noqa: F811
    from trm_lib.backbone.features import FeatureCacheError, FeatureStore

    _, folder, manifest, manifest_file, _ = _incomplete_store(backbone, tmp_path)
    manifest.update(complete=True, completed=6)
    manifest["arrays"]["global"]["file"] = "/etc/hostname"
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(FeatureCacheError, match=r"field 'arrays.global.file' = '/etc/hostname' "
                                                r"points outside"):
        FeatureStore(folder)


def test_a_mask_sidecar_naming_another_file_is_refused(tmp_path):
    """The mask's ``.sha256`` sidecar records the mask's name (``sha256sum -c`` format): a
    sidecar naming another file, or one outside the folder, is refused, never followed."""
    from trm_lib.datasets import MultiLabelDataset
    from trm_lib.datasets.labels import LabelError, mask_path, observed_labels

    labels = np.where(np.random.default_rng(0).random((8, 3)) < 0.5, 1, -1)
    data = MultiLabelDataset("t", "train", tmp_path / "d", [tmp_path / f"{i}.png"
                                                            for i in range(8)], labels,
                             ["a", "b", "c"])
    first = observed_labels(data, "proportion", 0.5, 0, cache_root=tmp_path / "cache")
    file = mask_path(data, "proportion", 0.5, 0, cache_root=tmp_path / "cache")
    side = file.with_name(file.name + ".sha256")
    digest = side.read_text().split()[0]
    np.testing.assert_array_equal(
        observed_labels(data, "proportion", 0.5, 0, cache_root=tmp_path / "cache"), first)
    for name, fragment in (("other.npy", "names 'other.npy', not the mask"),
                           ("../../../etc/passwd", "points outside")):
        side.write_text(f"{digest}  {name}\n")
        with pytest.raises(LabelError, match=fragment):
            observed_labels(data, "proportion", 0.5, 0, cache_root=tmp_path / "cache")
