"""Dataset readers: every layout on a tree the test writes, the real ../shared sets, and bad layouts."""

from __future__ import annotations

import pytest

import synthetic_trees as trees
from anomalyclip_med.data import DATASETS, PIXEL_LEVEL, DatasetLayoutError, Sample, load_samples
from anomalyclip_med.errors import InputError
from conftest import SHARED_DATA, needs_shared_data


def _by_name(samples):
    return {(s.cls_name, s.specie, s.image.name): s for s in samples}


@pytest.mark.parametrize("dataset,normal,suffix", [("mvtec", "good", "_mask"), ("mpdd", "good", "_mask"),
                                                   ("dtd", "good", "_mask"), ("btad", "ok", "")])
def test_mvtec_style_trees(tmp_path, dataset, normal, suffix):
    root = trees.mvtec(tmp_path / dataset, normal=normal, mask_suffix=suffix)
    test = load_samples(dataset, root)
    # a: 2 good + 2 crack; b: 2 good + 2 hole + 2 scratch
    assert len(test) == 10 and sum(s.label for s in test) == 6
    assert all(s.dataset == dataset for s in test)
    by = _by_name(test)
    hole = by[("b", "hole", "001.png")]
    assert hole.label == 1 and hole.mask == root / "b" / "ground_truth" / "hole" / f"001{suffix}.png"
    good = by[("a", normal, "000.png")]
    assert good.label == 0 and good.mask is None
    assert {s.cls_name for s in test} == {"a", "b"}
    train = load_samples(dataset, root, split="train")
    assert [s.label for s in train] == [0, 0] and all(s.mask is None for s in train)


def test_btad_bmp_images_with_png_masks(tmp_path):
    root = trees.mvtec(tmp_path / "btad", normal="ok", mask_suffix="", ext=".bmp")
    s = _by_name(load_samples("btad", root))[("a", "crack", "000.bmp")]
    assert s.mask.name == "000.png"


def test_visa_split_csv(tmp_path):
    root = trees.visa(tmp_path / "visa")
    test = load_samples("visa", root)
    assert [(s.cls_name, s.label) for s in test] == [("candle", 0), ("candle", 1), ("pcb1", 0), ("pcb1", 1)]
    assert test[1].mask == root / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    assert test[0].mask is None
    train = load_samples("visa", root, split="train")
    assert len(train) == 4 and not any(s.label for s in train)


def test_meta_json(tmp_path):
    root = trees.meta(tmp_path / "m")
    samples = load_samples("meta", root)
    assert [(s.cls_name, s.specie, s.label) for s in samples] == [
        ("bottle", "good", 0), ("bottle", "broken", 1), ("brain", "yes", 1)]
    assert samples[1].mask == root / "bottle" / "ground_truth" / "broken" / "000_mask.png"
    assert samples[2].mask is None  # a folder as mask path: image-level only, as the authors
    assert samples[2].image == root / "brain" / "test" / "yes" / "Y1.jpg"  # absolute path kept
    with pytest.raises(DatasetLayoutError, match="lists no 'train' images"):
        load_samples("meta", root, split="train")


@pytest.mark.parametrize("nested", [False, True])
def test_headct_labels_csv(tmp_path, nested):
    root = trees.headct(tmp_path / "h", nested=nested)
    samples = load_samples("headct", root)
    assert [(s.image.name, s.label, s.mask) for s in samples] == [
        ("000.png", 1, None), ("001.png", 1, None), ("002.png", 0, None), ("003.png", 0, None)]


@pytest.mark.parametrize("dataset", ["brainmri", "br35h"])
def test_yes_no_folders(tmp_path, dataset):
    samples = load_samples(dataset, trees.yes_no(tmp_path / "b"))
    assert sorted((s.image.name, s.label, s.specie) for s in samples) == [
        ("N1.png", 0, "no"), ("Y1.jpg", 1, "yes"), ("Y2.JPG", 1, "yes")]  # pred/ is not read
    assert all(s.mask is None for s in samples)


@pytest.mark.parametrize(
    "dataset,images,masks,suffix,split",
    [
        ("isic", "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth", "_Segmentation", "test"),
        ("isic", "ISBI2016_ISIC_Part1_Training_Data", "ISBI2016_ISIC_Part1_Training_GroundTruth", "_Segmentation",
         "train"),
        ("clinicdb", "images", "masks", "", "test"),
        ("clinicdb", "Original", "Ground Truth", "", "test"),
        ("colondb", "images", "masks", "", "test"),
        ("kvasir", "images", "masks", "", "test"),
        ("endo", "images", "masks", "", "test"),
        ("tn3k", "test-image", "test-mask", "", "test"),
        ("tn3k", "trainval-image", "trainval-mask", "", "train"),
    ],
)
def test_paired_medical_sets(tmp_path, dataset, images, masks, suffix, split):
    root = trees.paired(tmp_path / dataset, images, masks, names=("ISIC_2", "ISIC_10"), mask_suffix=suffix)
    samples = load_samples(dataset, root, split=split)
    assert [s.image.name for s in samples] == ["ISIC_10.png", "ISIC_2.png"]
    # paired by name, not by listing order
    assert [s.mask.name for s in samples] == [f"ISIC_10{suffix}.png", f"ISIC_2{suffix}.png"]
    assert all(s.label == 1 for s in samples) and dataset in PIXEL_LEVEL


def test_folder_with_masks(tmp_path):
    root = trees.folder_masks(tmp_path / "f")
    got = {s.image.name: (s.label, s.mask.name if s.mask else None, s.cls_name) for s in load_samples("folder", root)}
    assert got == {"a.png": (1, "a_mask.png", "liver"), "b.png": (0, "b.png", "liver"), "c.png": (0, None, "f")}


@pytest.mark.parametrize("with_masks", [True, False])
def test_folder_with_labels_csv(tmp_path, with_masks):
    root = trees.folder_csv(tmp_path / "f", with_masks=with_masks)
    samples = load_samples("folder", root)
    assert [(s.image.name, s.label, s.cls_name) for s in samples] == [("p1.png", 1, "lung"), ("p2.png", 0, "lung")]
    assert (samples[0].mask is not None) == with_masks


def test_every_dataset_has_a_documented_tree():
    assert set(DATASETS) == {"mvtec", "visa", "mpdd", "btad", "dtd", "meta", "folder", "headct", "brainmri",
                             "br35h", "isic", "clinicdb", "colondb", "kvasir", "endo", "tn3k",
                             "bmad-brain", "bmad-liver", "bmad-resc", "bmad-oct2017", "bmad-rsna", "bmad-camelyon16",
                             "medianomaly-rsna", "medianomaly-vincxr", "medianomaly-braintumor", "medianomaly-lag",
                             "medianomaly-isic2018", "medianomaly-camelyon16", "medianomaly-brats2021"}
    assert all(tree.startswith("ROOT/") for tree in DATASETS.values())


# ---------------------------------------------------------------------------------------------- real data
@needs_shared_data
def test_real_headct():
    samples = load_samples("headct", SHARED_DATA / "HeadCT" / "Dataset")
    assert len(samples) == 200 and sum(s.label for s in samples) == 100
    assert samples[0] == Sample(SHARED_DATA / "HeadCT" / "Dataset" / "head_ct" / "000.png", None, 1, "brain",
                                "headct", "hemorrhage")


@needs_shared_data
def test_real_brainmri():
    samples = load_samples("brainmri", SHARED_DATA / "BrainMRI")
    assert len(samples) == 253 and sum(s.label for s in samples) == 155


@needs_shared_data
def test_real_kvasir_sample():
    samples = load_samples("kvasir", SHARED_DATA / "Kvasir-SEG-sample" / "Kvasir-SEG")
    assert len(samples) == 5 and all(s.label == 1 and s.mask.parent.name == "masks" for s in samples)
    assert all(s.mask.name == s.image.name for s in samples)


# ---------------------------------------------------------------------------------------------- bad layouts
def test_wrong_layout_names_expected_tree_and_what_was_found(tmp_path):
    root = trees.yes_no(tmp_path / "brain")
    with pytest.raises(DatasetLayoutError) as err:
        load_samples("mvtec", root)
    msg = str(err.value)
    assert "not a 'mvtec' dataset root" in msg and "ground_truth/<defect>" in msg  # expected tree
    assert "contains: no/, pred/, yes/" in msg  # what is there
    assert isinstance(err.value, InputError)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_layout_refuses_an_empty_root(tmp_path, dataset):
    with pytest.raises(DatasetLayoutError, match=f"(?s)not a '{dataset}' dataset root.*Expected layout.*is empty"):
        load_samples(dataset, tmp_path)


def test_missing_root(tmp_path):
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        load_samples("kvasir", tmp_path / "nope")


def test_unknown_format_and_split(tmp_path):
    with pytest.raises(DatasetLayoutError, match="Unknown dataset format 'nifti'.*mvtec"):
        load_samples("nifti", tmp_path)
    with pytest.raises(DatasetLayoutError, match="has no split 'train'.*whole set is its test set"):
        load_samples("headct", tmp_path, split="train")


def test_empty_class_folder(tmp_path):
    root = trees.mvtec(tmp_path / "m")
    (root / "a" / "test" / "crack" / "000.png").unlink()
    (root / "a" / "test" / "crack" / "001.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"'.*a/test/crack' holds no images.*empty class folder"):
        load_samples("mvtec", root)


def test_anomaly_without_mask(tmp_path):
    root = trees.mvtec(tmp_path / "m")
    (root / "b" / "ground_truth" / "hole" / "001_mask.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"no mask for image '.*hole/001.png'.*001_mask"):
        load_samples("mvtec", root)


def test_missing_ground_truth_folder(tmp_path):
    root = trees.paired(tmp_path / "k", "images", "masks")
    (root / "masks" / "1.png").rename(root / "1.png")
    with pytest.raises(DatasetLayoutError, match="no mask for image"):
        load_samples("kvasir", root)


def test_listed_file_missing(tmp_path):
    root = trees.visa(tmp_path / "v")
    (root / "pcb1" / "Data" / "Masks" / "Anomaly" / "000.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)1 listed file\(s\) do not exist.*pcb1/Data/Masks"):
        load_samples("visa", root)


def test_bad_csv_contents(tmp_path):
    root = trees.visa(tmp_path / "v")
    table = root / "split_csv" / "1cls.csv"
    table.write_text(table.read_text().replace("test,anomaly", "test,broken", 1))
    with pytest.raises(DatasetLayoutError, match="label 'broken' is not 'normal' or 'anomaly'"):
        load_samples("visa", root)
    (root / "labels.csv").write_text("image,grade\nx.png,1\n")
    with pytest.raises(DatasetLayoutError, match="needs the columns 'image' and 'label'"):
        load_samples("folder", root)
    h = trees.headct(tmp_path / "h")
    (h / "labels.csv").write_text("id, hemorrhage\n0,1\n7,0\n")
    with pytest.raises(DatasetLayoutError, match=r"no image for id 7 \('007.png'\)"):
        load_samples("headct", h)


def test_bad_meta_json(tmp_path):
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="not valid JSON"):
        load_samples("meta", tmp_path)
    (tmp_path / "meta.json").write_text('{"train": {}}')
    with pytest.raises(DatasetLayoutError, match=r"no 'test' section \(top-level keys: \['train'\]\)"):
        load_samples("meta", tmp_path)
