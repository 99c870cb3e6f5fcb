"""kfp components: one per pipeline step, each a thin door onto the step's plain function.

The components are containerized Python components bound to the inspectflow image, which already holds
inspectflow and kfp, so no package is installed at run time (``install_kfp_package=False``). Heavy imports
stay inside the functions: kfp copies only the function's source into the container.
"""

#: The component image built from ``infra/``; the local runner ignores it and uses this interpreter.
COMPONENT_IMAGE = "ghcr.io/inspectflow/inspectflow:0.1.0"
