"""Every MLflow tag key, registered-model alias and artifact path that inspectflow writes or reads.

Runs and registered model versions share tag names: the register step copies a run's lineage tags (those
starting with one of :data:`LINEAGE_TAG_PREFIXES`) onto the version it registers.
"""

# -- registered-model aliases

CHAMPION = "champion"
CHALLENGER = "challenger"

# -- lineage tags (ingest, on the run; copied onto the model version)

#: DVC's content hash of the source folder, as ``dvc add`` writes it to ``data.dvc``.
DATA_VERSION_TAG = "data.dvc_md5"
GIT_TAG_PREFIX = "git."
GIT_COMMIT_TAG = f"{GIT_TAG_PREFIX}commit"
GIT_DIRTY_TAG = f"{GIT_TAG_PREFIX}dirty"
KFP_TAG_PREFIX = "kfp."
PIPELINE_NAME_TAG = f"{KFP_TAG_PREFIX}pipeline_name"
PIPELINE_RUN_NAME_TAG = f"{KFP_TAG_PREFIX}pipeline_run_name"
PIPELINE_RUN_ID_TAG = f"{KFP_TAG_PREFIX}pipeline_run_id"
#: ``version.<package>``: the installed version of each key package.
PACKAGE_VERSION_TAG_PREFIX = "version."
#: The DVC experiment (``dvc exp run``) that ran the pipeline: its versions are challengers only.
DVC_EXPERIMENT_TAG = "dvc.experiment"
#: What ``dvc exp run`` sets for its stages' commands: the experiment's name.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
LINEAGE_TAG_PREFIXES = (
    DATA_VERSION_TAG,
    GIT_TAG_PREFIX,
    KFP_TAG_PREFIX,
    PACKAGE_VERSION_TAG_PREFIX,
    DVC_EXPERIMENT_TAG,
)

# -- metric names: grouped by split with "/", so the MLflow UI charts each group in its own section

TEST_METRICS = "test/"
VAL_METRICS = "val/"
TRAIN_METRICS = "train/"
#: A model's thresholds (``ModelSpec.thresholds``) hold this key when the detection threshold is a quantile
#: of good validation images' scores (no defective validation image to pick it on): the quantile.
GOOD_QUANTILE_THRESHOLD = "good_quantile"
#: The trivial model's test scores, in the same chart section as the model's: ``test/baseline_macro_f1``.
BASELINE_METRICS = f"{TEST_METRICS}baseline_"
#: The ends of a test score's 95% bootstrap interval over the test images: ``test_ci95/macro_f1_low``.
TEST_INTERVALS = "test_ci95/"
#: Images (confusion matrix, overlays) logged with ``mlflow.log_image``: ``visuals/overlays/worst_1``.
VISUALS = "visuals/"
#: A method's own estimate over repeated splits of the training split (features+svm's): ``cv/accuracy_mean``.
#: Shown beside the test scores under this name, never judged by the gate in their place.
CV_METRICS = "cv/"
#: A candidate of ``train.method=auto`` on the training split's held-out parts (its child run):
#: ``select/mean``, ``select/score`` per part.
SELECTION_METRICS = "select/"

# -- other run tags

WORKLOAD_TAG = "inspectflow.workload"
#: Why a step failed, as ``<step>: <cause>``, on a FAILED run (``killed: ...`` on a KILLED one).
FAILURE_TAG = "inspectflow.failure"
#: The host and process that own a pipeline's run, and when it last showed life (Unix seconds).
RUN_HOST_TAG = "inspectflow.host"
RUN_PID_TAG = "inspectflow.pid"
HEARTBEAT_TAG = "inspectflow.heartbeat"
#: Per step, the image it ran in (name and ID), when the container runner ran it: ``inspectflow.image.train``.
STEP_IMAGE_TAG_PREFIX = "inspectflow.image."
DATA_SOURCE_TAG = "data.source"
#: The ingested dataset's digest (its manifest), on the run and on the model version.
DATA_DIGEST_TAG = "data.digest"
DATA_FORMAT_TAG = "data.format"
DATA_SPLIT_ORIGIN_TAG = "data.split_origin"
#: The working size (``HxW``) and what the images and masks weigh decoded at it, in bytes.
DATA_WORKING_SIZE_TAG = "data.working_size"
DATA_DECODED_BYTES_TAG = "data.decoded_bytes"
VALIDATION_SUCCESS_TAG = "validation.success"
FEATURES_CACHE_TAG = "features.cache"
REGISTERED_MODEL_NAME_TAG = "registered_model.name"
REGISTERED_MODEL_VERSION_TAG = "registered_model.version"
#: MLflow's own tag on a nested run.
PARENT_RUN_TAG = "mlflow.parentRunId"

# -- model-version tags (register step); the gate's decision and reason are also run tags

CLASSES_TAG = "inspectflow.classes"
ARCHITECTURE_TAG = "inspectflow.architecture"
MLFLOW_RUN_ID_TAG = "inspectflow.mlflow_run_id"
GATE_DECISION_TAG = "gate.decision"
GATE_REASON_TAG = "gate.reason"
GATE_PRIMARY_METRIC_TAG = "gate.primary_metric"
GATE_NEW_SCORE_TAG = "gate.new_score"
GATE_CHAMPION_VERSION_TAG = "gate.champion_version"
GATE_CHAMPION_SCORE_TAG = "gate.champion_score"
#: The images the gate's scores were computed on (the test split's count) and the trivial baseline's score.
GATE_TEST_IMAGES_TAG = "gate.test_images"
GATE_BASELINE_SCORE_TAG = "gate.baseline_score"

# -- registered-model tags

#: ``audit.NNNNNN``: one alias move each (see :mod:`inspectflow.lifecycle.audit`).
AUDIT_TAG_PREFIX = "audit."

# -- run artifacts

#: The logged model's name in its run, and the pyfunc model's key for the model folder.
MODEL_ARTIFACT = "model"
#: The ONNX export among a pyfunc model's artifacts (a pytorch-flavor model keeps it in ``extra_files/``).
ONNX_ARTIFACT = "onnx"
#: The int8 engine quantized from it, where the version keeps one (``serving/quantize.py``).
ONNX_INT8_ARTIFACT = "onnx_int8"
#: Version tags of the int8 check: accepted or refused; agreement with fp32, metric change, speed ratio.
INT8_TAG = "serving.int8"
INT8_AGREEMENT_TAG = "serving.int8_agreement"
INT8_METRIC_DELTA_TAG = "serving.int8_metric_delta"
INT8_SPEEDUP_TAG = "serving.int8_speedup"
DATA_ARTIFACTS = "data"
#: Images per split and label, logged by ingest as an MLflow table.
DATA_COUNTS_ARTIFACT = f"{DATA_ARTIFACTS}/counts.json"
VALIDATION_ARTIFACTS = "validation"
CHECKPOINTS_ARTIFACTS = "checkpoints"
TRAINING_ARTIFACTS = "training"
HISTORY_ARTIFACT = f"{TRAINING_ARTIFACTS}/history.json"
#: What ``train.method=auto`` compared and which candidate won (each candidate is also a child run).
SELECTION_ARTIFACT = f"{TRAINING_ARTIFACTS}/selection.json"
#: The run tag with that comparison's one-line description, which the model card quotes.
SELECTION_TAG = "inspectflow.selection"
EVALUATION_ARTIFACTS = "evaluation"
SCORES_FILE = "scores.json"
BASELINE_FILE = "baseline.json"
#: Each headline test score and the ends of its 95% bootstrap interval: ``{"macro_f1": [value, low, high]}``.
INTERVALS_FILE = "intervals.json"
SCORES_ARTIFACT = f"{EVALUATION_ARTIFACTS}/{SCORES_FILE}"
REGISTRY_SUMMARY_ARTIFACT = "registry/summary.json"

# -- the drift watch (inspectflow monitor)

#: Where a registered version's run keeps its drift reference, and a check's run its report.
MONITORING_ARTIFACTS = "monitoring"
REFERENCE_FILE = "reference.npz"
DRIFT_REPORT_FILE = "drift_report.html"
DRIFT_FIGURE_FILE = "drift.png"
#: Tags of a check's run: ``drift`` or ``no drift``, the model version checked, the images' source.
DRIFT_VERDICT_TAG = "monitor.verdict"
DRIFT_MODEL_TAG = "monitor.model"
DRIFT_SOURCE_TAG = "monitor.source"
