"""Cloud Run Job entrypoint: one watchdog pass (`python -m jobs.watchdog`).

Cloud Scheduler runs the job every 5 minutes (terraform jobs.tf). The container is
wired from the environment exactly as the services are, so on the gcp backend the
watchdog also checks the Cloud Scheduler tick job (Container.tick_health). Exit 0 after
a pass, whatever it found (findings go to the ops channel); exit 1 if the pass itself
failed, so the job's own failure is visible in Cloud Run and to its dead-man monitor.
"""

from __future__ import annotations

import json
import logging
import sys

from herald.bootstrap import build_container
from herald.logs import configure_logging
from herald.services.watchdog import run_watchdog
from herald.settings import Settings


def main() -> int:
    settings = Settings()
    configure_logging(settings.log_level, settings.gcp_project)
    try:
        result = run_watchdog(build_container(settings))
    except Exception:
        logging.getLogger("jobs.watchdog").exception("watchdog pass failed")
        return 1
    print(json.dumps({"open": len(result.found), "new": len(result.new), "posted": result.posted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
