"""The engines tier runs only from `.ci/run` (TRL_BON_ENGINES names the engines of the current virtual environment):
the plain test run lacks DeepSpeed and vLLM, and these multi-process runs take minutes."""

import os


collect_ignore_glob = [] if os.environ.get("TRL_BON_ENGINES") else ["test_*.py"]
