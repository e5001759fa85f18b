# Debian's Chromium for the admin pages' browser tests (tests/browser, Playwright without
# `playwright install`). Idempotent; the tests fail, not skip, when it is missing.
.PHONY: chromium

chromium:
	@command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

TEST_DEPS += chromium
