"""Data stage: from an image folder to a split. :mod:`~bench.data.scan` reads every file
once (sha256, perceptual hashes, size, mode) into a ``DatasetIndex``;
:mod:`~bench.data.duplicates` links exact and near-duplicate copies into groups;
:mod:`~bench.data.split` assigns whole groups to train/val/test (stratified, seeded,
written once as ``split.json``); :mod:`~bench.data.folds` plans nested, repeated
cross-validation on the same groups (``folds.json``); :mod:`~bench.data.loading` and
:mod:`~bench.data.images` turn split rows into uint8 arrays at a backbone's input size;
:mod:`~bench.data.demo` writes the synthetic demo dataset. Nothing here imports TensorFlow
(augmentation does, when called). ``scan`` the function lives in :mod:`bench.data.scan`
(same name as its module).
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "DatasetIndex": "scan", "ImageRecord": "scan",
    "DuplicateGroup": "duplicates", "group_duplicates": "duplicates", "exact_duplicate_sets": "duplicates",
    "SplitManifest": "split", "make_split": "split", "read_split": "split", "write_split": "split",
    "check_sizes": "split",
    "FoldPlan": "folds", "make_folds": "folds", "read_folds": "folds", "write_folds": "folds", "check_cv": "folds",
    "load_images": "loading", "label_indices": "loading", "augmented_views": "loading",
    "UnreadableImage": "images", "load_array": "images", "open_rgb": "images", "square_resize": "images",
    "make_demo_data": "demo", "demo_data_dir": "demo",
})
