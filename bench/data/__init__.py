"""Data stage: from an image folder to a split. :mod:`~bench.data.scan` reads every file
once (sha256, perceptual hashes, size, mode, copy-detection features) into a
``DatasetIndex``; :mod:`~bench.data.copies` links copies (exact, resized, re-processed,
mirrored/rotated: two independent measures must agree); :mod:`~bench.data.user_groups`
reads ``--groups`` (patient IDs); :mod:`~bench.data.duplicates` builds groups from both
(average linkage, so one weak link cannot chain groups; narrow label conflicts);
:mod:`~bench.data.split` assigns whole groups to train/val/test (stratified, seeded,
written once as ``split.json``, with the leakage audit of :mod:`~bench.data.audit`),
keeping groups joined by refused links on one side with :mod:`~bench.data.placement`;
:mod:`~bench.data.group_files` writes ``groups.csv`` and the contact sheet of
:mod:`~bench.data.contact_sheet` (linked images side by side); :mod:`~bench.data.reprocess` makes re-processed
copies for tests and benchmarks; :mod:`~bench.data.folds` plans nested, repeated
cross-validation on the same groups (``folds.json``); :mod:`~bench.data.loading` and
:mod:`~bench.data.images` turn split rows into uint8 arrays at a backbone's input size;
:mod:`~bench.data.demo` writes the synthetic demo dataset. Nothing here imports TensorFlow
(augmentation does, when called). ``scan`` the function lives in :mod:`bench.data.scan`
(same name as its module).
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "DatasetIndex": "scan", "ImageRecord": "scan",
    "find_links": "copies", "copy_features": "copies", "Link": "copies",
    "DuplicateGroup": "duplicates", "build_groups": "duplicates", "exact_duplicate_sets": "duplicates",
    "read_user_groups": "user_groups", "leakage_audit": "audit", "group_index": "split",
    "SplitManifest": "split", "make_split": "split", "read_split": "split", "write_split": "split",
    "check_sizes": "split",
    "FoldPlan": "folds", "make_folds": "folds", "read_folds": "folds", "write_folds": "folds", "check_cv": "folds",
    "load_images": "loading", "label_indices": "loading", "augmented_batches": "loading", "image_batches": "loading",
    "UnreadableImage": "images", "load_array": "images", "open_rgb": "images", "square_resize": "images",
    "make_demo_data": "demo", "demo_data_dir": "demo",
})
