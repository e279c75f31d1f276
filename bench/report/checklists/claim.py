"""CLAIM, the Checklist for Artificial Intelligence in Medical Imaging, 2024 update (Tejani
et al., Radiology: Artificial Intelligence 2024;6(4):e240300): 44 items, numbered as in the
2024 checklist (item 13 image acquisition, 14-18 reference standard, 21 testing sample
size, 32 internal and 33 external evaluation, 34 trial registration, 43 availability).
Topics are bench's paraphrases; read the checklist itself for its wording. The facts are
those of :mod:`bench.report.checklists.evidence`."""

from __future__ import annotations

from bench.report.checklists.items import Checklist, Item

_T, _I, _M, _R, _D, _O = "Title and abstract", "Introduction", "Methods", "Results", "Discussion", "Other information"


def _item(n: int, section: str, topic: str, facts: tuple[str, ...] = (), add: str | None = None) -> Item:
    return Item(str(n), n, section, topic, facts, add)


ITEMS = (
    _item(1, _T, "Title marks the study as AI work and names the kind of method (such as deep learning)",
          ("task",), "the title itself"),
    _item(2, _T, "Summary of design, methods, results and conclusions", ("summary", "design"), "the abstract itself"),
    _item(3, _I, "Scientific and clinical background, intended use and role of the AI",
          (), "background, intended use and clinical role"),
    _item(4, _I, "Aims, objectives and hypotheses", ("design",), "the clinical aim and any hypothesis"),
    _item(5, _M, "Prospective or retrospective design",
          ("source",), "whether the images were collected for this study or taken from existing records"),
    _item(6, _M, "Study goal (such as model creation, feasibility, non-inferiority)", ("design",)),
    _item(7, _M, "Data sources", ("source",), "the origin of the images (centres, cohort, public set) and dates"),
    _item(8, _M, "Inclusion and exclusion criteria", ("inclusion",), "clinical inclusion and exclusion criteria"),
    _item(9, _M, "Data preprocessing", ("preprocessing",)),
    _item(10, _M, "Selection of data subsets, where done", ("inclusion",)),
    _item(11, _M, "De-identification methods", (), "how the images were de-identified"),
    _item(12, _M, "Handling of missing data", ("missing",)),
    _item(13, _M, "Image acquisition protocol", ("inputs",), "devices, sequences and acquisition parameters"),
    _item(14, _M, "How the reference standard was obtained",
          ("outcome",), "how the labels were established (pathology, expert read, follow-up)"),
    _item(15, _M, "Why this reference standard", (), "the rationale for the reference standard"),
    _item(16, _M, "Source of the reference-standard annotations and the annotators' qualifications",
          (), "who annotated and their training"),
    _item(17, _M, "How the test set was annotated", (), "annotation of the test images"),
    _item(18, _M, "Inter- and intra-rater variability of the annotations", (), "rater agreement"),
    _item(19, _M, "How data were assigned to partitions", ("partition",)),
    _item(20, _M, "Level at which the partitions are disjoint (image, patient, ...)", ("disjoint",)),
    _item(21, _M, "Intended size of the test data and how it was set",
          ("sizes", "precision"), "why this many test images, or a sample-size calculation"),
    _item(22, _M, "Detailed model description (inputs, outputs, layers)", ("model",)),
    _item(23, _M, "Software libraries, frameworks and packages", ("software",)),
    _item(24, _M, "Initialisation of model parameters", ("init",)),
    _item(25, _M, "Training details (augmentation, hyperparameters, number of models trained)", ("training",)),
    _item(26, _M, "How the final model was selected", ("selection",)),
    _item(27, _M, "Ensembling, where used", ("ensembling",)),
    _item(28, _M, "Performance metrics", ("metrics",)),
    _item(29, _M, "Statistical significance and uncertainty", ("uncertainty",)),
    _item(30, _M, "Robustness or sensitivity analysis",
          ("robustness",), "robustness to other scanners, sites, noise or artefacts"),
    _item(31, _M, "Explainability or interpretability methods and how they were checked",
          ("explain",), "whether and by whom the heatmaps were checked against the anatomy"),
    _item(32, _M, "Evaluation on internal data", ("internal",)),
    _item(33, _M, "Testing on external data",
          (), "an external test set (bench evaluate EXPORT FOLDER scores the export on one)"),
    _item(34, _M, "Clinical trial registration", (), "the registration, or that there is none"),
    _item(35, _R, "Numbers of patients or examinations included and excluded", ("flow",)),
    _item(36, _R, "Demographic and clinical characteristics of each partition",
          ("sizes",), "demographics and clinical characteristics per partition"),
    _item(37, _R, "Performance metrics with their statistical uncertainty", ("metrics", "uncertainty")),
    _item(38, _R, "Diagnostic performance estimates and their precision", ("operating", "uncertainty")),
    _item(39, _R, "Failure analysis of incorrect results",
          ("failures",), "why the misclassified images fail (reading them, with the heatmaps)"),
    _item(40, _D, "Study limitations", ("limitations",), "the limitations a run cannot see (sampling, labels, setting)"),
    _item(41, _D, "Implications for practice, intended use and clinical role", (), "implications for practice"),
    _item(42, _O, "Where the full protocol or further technical detail can be found",
          ("reproduce",), "the study protocol"),
    _item(43, _O, "Availability of software, trained model and data",
          ("reproduce", "export"), "where code, model and images are shared, and on what terms"),
    _item(44, _O, "Funding and the funders' role", (), "funding"),
)

CHECKLIST = Checklist(
    key="claim",
    title="CLAIM 2024",
    reference="Tejani AS et al. Checklist for Artificial Intelligence in Medical Imaging (CLAIM): 2024 Update. "
              "Radiol Artif Intell 2024;6(4):e240300",
    numbering="items 1-44 of the 2024 update",
    items=ITEMS,
)
