"""TRIPOD+AI (Collins et al., BMJ 2024;385:e078378): 27 main items, several with
sub-items (3a-c, 5a-b, 6a-c, 8a-c, 9a-c, 12a-g, 18a-f, 20a-c, 23a-b, 27a-c), numbered as
in the published checklist. Topics are bench's paraphrases; read the checklist itself
for its wording. The facts are those of :mod:`bench.report.checklists.evidence`."""

from __future__ import annotations

from bench.report.checklists.items import Checklist, Item

_T, _I, _M, _R, _D, _O = "Title and abstract", "Introduction", "Methods", "Results", "Discussion", "Other information"

ITEMS = (
    Item("1", 1, _T, "Title: says a prediction model is developed or evaluated, for whom, and what it predicts",
         ("task",), "the title, with the target population and the outcome in clinical terms"),
    Item("2", 2, _T, "Abstract, structured as in the TRIPOD+AI abstracts list",
         ("summary", "design"), "the abstract itself"),
    Item("3a", 3, _I, "Health-care context (diagnosis or prognosis), why the model is needed, existing models",
         (), "the clinical context, the rationale and the models that exist already"),
    Item("3b", 3, _I, "Target population, place in the care pathway, intended users",
         (), "who the model is for and who would use it"),
    Item("3c", 3, _I, "Known health inequalities between sociodemographic groups",
         (), "known inequalities relevant to the task"),
    Item("4", 4, _I, "Objectives, including whether the study develops, evaluates or does both",
         ("design",), "the clinical question the comparison answers"),
    Item("5a", 5, _M, "Data sources for development and evaluation, why they were used, how representative",
         ("source",), "where the images come from (centre, cohort, registry or public set), why, and how "
                      "representative they are"),
    Item("5b", 5, _M, "Dates of data collection", (), "start and end dates of image collection"),
    Item("6a", 6, _M, "Setting (care level) and the number and location of centres",
         (), "the setting and the centres"),
    Item("6b", 6, _M, "Eligibility criteria of participants",
         ("inclusion",), "the clinical inclusion and exclusion criteria of patients"),
    Item("6c", 6, _M, "Treatments received, and how they were handled, where relevant",
         (), "treatments, or that none are relevant"),
    Item("7", 7, _M, "Data preparation and quality checks, and whether they were alike across sociodemographic "
                     "groups", ("preprocessing", "quality")),
    Item("8a", 8, _M, "Outcome: definition, how and when assessed, time horizon, rationale, consistency across "
                      "groups", ("outcome",), "how and when the labels were established (pathology, expert read...) "
                                             "and why"),
    Item("8b", 8, _M, "Qualifications and demographics of outcome assessors, where judgement is needed",
         (), "who labelled the images"),
    Item("8c", 8, _M, "Blinding of outcome assessment", (), "whether labellers were blinded"),
    Item("9a", 9, _M, "How the candidate predictors were chosen, and any pre-selection", ("inputs",)),
    Item("9b", 9, _M, "Definition and measurement of every predictor",
         ("inputs",), "how and when the images were acquired (device, protocol)"),
    Item("9c", 9, _M, "Qualifications of predictor assessors, where judgement is needed",
         (), "whether any input needed human judgement"),
    Item("10", 10, _M, "How the study size was reached and why it suffices",
         ("sizes", "precision"), "why this many images, or a sample-size calculation"),
    Item("11", 11, _M, "Handling of missing data and reasons for leaving data out", ("missing",)),
    Item("12a", 12, _M, "How the data were used: development, evaluation, partitioning", ("partition", "sizes")),
    Item("12b", 12, _M, "Handling of predictors: rescaling, transformation, standardisation", ("preprocessing",)),
    Item("12c", 12, _M, "Model type and rationale, model-building steps, hyperparameter tuning, internal validation",
         ("model", "training", "selection"), "why these candidate backbones"),
    Item("12d", 12, _M, "Heterogeneity across clusters (such as hospitals) in estimates and performance",
         (), "the run holds no centre information: cluster heterogeneity, or that there is one centre"),
    Item("12e", 12, _M, "Performance measures and plots, their rationale, and how models were compared",
         ("metrics", "uncertainty")),
    Item("12f", 12, _M, "Model updating (such as recalibration) after evaluation", ("calibration",)),
    Item("12g", 12, _M, "How the predictions were computed for evaluation (code, object, API)", ("prediction_code",)),
    Item("13", 13, _M, "Class-imbalance methods, why, and any recalibration after them", ("imbalance",)),
    Item("14", 14, _M, "Approaches to model fairness and their rationale",
         (), "fairness approaches; the run holds no sociodemographic attributes"),
    Item("15", 15, _M, "Model output, and how and why classification thresholds were chosen", ("thresholds",)),
    Item("16", 16, _M, "Differences between development and evaluation data (setting, eligibility, outcome, "
                       "predictors)", ("same_source",)),
    Item("17", 17, _O, "Ethics approval and consent or its waiver", (), "the approving board and consent"),
    Item("18a", 18, _O, "Funding and the funders' role", (), "funding"),
    Item("18b", 18, _O, "Conflicts of interest", (), "conflicts of interest"),
    Item("18c", 18, _O, "Where the protocol is, or that there is none", (), "the protocol"),
    Item("18d", 18, _O, "Registration, or that there is none", (), "the registration"),
    Item("18e", 18, _O, "Availability of the study data",
         ("source",), "where and on what terms others can obtain the images"),
    Item("18f", 18, _O, "Availability of the analysis code",
         ("reproduce",), "where bench at this version can be obtained"),
    Item("19", 19, _O, "Patient and public involvement, or none", (), "patient and public involvement"),
    Item("20a", 20, _R, "Flow of participants, with numbers with and without the outcome",
         ("flow",), "the number of patients behind the images, unless each image is one patient"),
    Item("20b", 20, _R, "Characteristics overall and per source: dates, key predictors, demographics, outcomes, "
                        "missing data", ("sizes", "inputs"), "demographics, dates and a per-source breakdown"),
    Item("20c", 20, _R, "Evaluation data compared with development data (demographics, predictors, outcome)",
         ("sizes",), "demographics and acquisition per partition"),
    Item("21", 21, _R, "Number of participants and outcome events in each analysis", ("sizes",)),
    Item("22", 22, _R, "The full model (code, object, API) for predictions by others, with any access limits",
         ("export",), "where the model can be obtained and on what terms"),
    Item("23a", 23, _R, "Performance with confidence intervals, including key subgroups; plots",
         ("metrics", "uncertainty"), "performance in key sociodemographic subgroups"),
    Item("23b", 23, _R, "Heterogeneity of performance across clusters, if examined", (), "cluster results"),
    Item("24", 24, _R, "Results of model updating: the updated model and its performance", ("calibration",)),
    Item("25", 25, _D, "Overall interpretation, including fairness, against the objectives and earlier studies",
         ("summary",), "the interpretation against the objectives and earlier work"),
    Item("26", 26, _D, "Limitations (representativeness, size, overfitting, missing data) and their effects",
         ("limitations",), "the limitations a run cannot see (sampling, labels, setting)"),
    Item("27a", 27, _D, "How poor-quality or unavailable inputs should be assessed and handled in use",
         ("input_handling",), "the checks of image quality a user must make"),
    Item("27b", 27, _D, "User interaction with inputs or the model, and the expertise needed",
         (), "who operates the model and with what training"),
    Item("27c", 27, _D, "Next steps for research, on applicability and generalisability", (), "next steps"),
)

CHECKLIST = Checklist(
    key="tripod_ai",
    title="TRIPOD+AI",
    reference="Collins GS et al. TRIPOD+AI statement. BMJ 2024;385:e078378",
    numbering="items 1-27 with the published sub-items (3a-c, 5a-b, 6a-c, 8a-c, 9a-c, 12a-g, 18a-f, 20a-c, "
              "23a-b, 27a-c)",
    items=ITEMS,
)
