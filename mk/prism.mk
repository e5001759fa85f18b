# Prism serves SendGrid's own OpenAPI spec for the contract tests (tests/contract/).
# Idempotent: installs only when the pinned version's stamp or the binary is missing.
PRISM_VERSION := 5.16.0
PRISM_DIR := $(TOOLS)/prism
PRISM := $(PRISM_DIR)/node_modules/.bin/prism
PRISM_STAMP := $(PRISM_DIR)/.installed-$(PRISM_VERSION)

TEST_DEPS += prism

.PHONY: prism

prism:
	@if [ ! -f $(PRISM_STAMP) ] || [ ! -x $(PRISM) ]; then \
	  command -v npm >/dev/null || { echo "npm is required to install Prism (apt-get install -y npm)" >&2; exit 1; }; \
	  mkdir -p $(PRISM_DIR) && rm -f $(PRISM_DIR)/.installed-* && \
	  npm install --prefix $(PRISM_DIR) --no-audit --no-fund --loglevel=error @stoplight/prism-cli@$(PRISM_VERSION) && \
	  $(PRISM) --version && touch $(PRISM_STAMP); \
	fi
