"""Deploy stage, on a finished run: :mod:`~bench.deploy.run_info` is the one reader of a
run folder; :mod:`~bench.deploy.model` wraps the best model for raw images (exact Pillow
resize inside) and writes its ``labels.json`` contract; :mod:`~bench.deploy.formats`
saves Keras, SavedModel and TFLite files; :mod:`~bench.deploy.verify` checks the export
in a fresh process against the run's test predictions; :mod:`~bench.deploy.model_card`
renders ``model_card.md``, whose YAML front matter (:mod:`~bench.deploy.model_index`) gives
the metrics with their intervals in Hugging Face's ``model-index`` layout;
:mod:`~bench.deploy.export` assembles the folder;
:mod:`~bench.deploy.predict`, :mod:`~bench.deploy.gradcam` and :mod:`~bench.deploy.serve`
(the Streamlit app in :mod:`~bench.deploy.serve_app`) use it.
"""

from bench.lazy import reexport

__getattr__, __dir__, __all__ = reexport(__name__, {
    "RunInfo": "run_info", "run_info": "run_info",
    "build_export_model": "model", "labels_dict": "model",
    "export_run": "export", "export_winner": "export", "ExportResult": "export",
    "check_export": "verify",
    "Predictor": "predict", "predict_paths": "predict",
    "GradCam": "gradcam", "gradcam_grid": "gradcam",
})
