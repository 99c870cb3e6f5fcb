from kfp import dsl

from inspectflow.components import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, install_kfp_package=False)
def monitor(images: str, config: str, model_uri: str) -> str:
    """Checks new images for drift from the champion's training images, logged to MLflow.

    Args:
        images: The new images: an ``s3://bucket/prefix`` (or a folder the step can read).
        config: Pipeline configuration as JSON (its ``monitor`` settings and model name).
        model_uri: The model version whose reference is compared; empty for the champion.

    Returns:
        ``drift`` or ``no drift``.
    """
    import json

    from inspectflow.runner.worker import call_step

    return call_step("inspectflow.steps.monitor:monitor_step", images, json.loads(config), model_uri)
