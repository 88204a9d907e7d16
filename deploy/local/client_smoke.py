"""Drives a scenario through the Python client that openapi-python-client generated from
the gateway's OpenAPI document (deploy/local/clients.sh runs it): creates a scenario,
activates it, runs it manually, reads the run until it finished and checks its result.
Any call the generator skipped, or answered in another shape than documented, fails it.

Environment: WEFT_API (the gateway's base URL), WEFT_API_KEY (a workspace's API key),
and PYTHONPATH holding the generated `weft_api_client` package.
"""

import os
import sys
import time

from weft_api_client import AuthenticatedClient
from weft_api_client.api.runs import get_run, start_run
from weft_api_client.api.scenarios import activate_scenario, create_scenario
from weft_api_client.models import (
    RunAccepted,
    RunDetail,
    RunPayload,
    RunStatus,
    Scenario,
    ScenarioDefinition,
    ScenarioStatus,
)

RUN_TIMEOUT_SECONDS = 30
FINAL = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}


def fail(message: str) -> None:
    print(f"client_smoke: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    client = AuthenticatedClient(
        base_url=os.environ["WEFT_API"],
        token=os.environ["WEFT_API_KEY"],
        raise_on_unexpected_status=True,
    )
    definition = ScenarioDefinition.from_dict(
        {
            "name": "generated client smoke",
            "trigger": {"type": "manual"},
            "nodes": [
                {
                    "id": "greet",
                    "type": "transform",
                    "output": {"text": "Hello {{ trigger.body.name }}"},
                }
            ],
        }
    )
    scenario = create_scenario.sync(client=client, body=definition)
    if not isinstance(scenario, Scenario):
        fail(f"createScenario answered {scenario!r}")

    activated = activate_scenario.sync(scenario.id, client=client)
    if not isinstance(activated, Scenario) or activated.status != ScenarioStatus.ACTIVE:
        fail(f"activateScenario answered {activated!r}")

    accepted = start_run.sync(
        scenario.id, client=client, body=RunPayload.from_dict({"name": "Ada"})
    )
    if not isinstance(accepted, RunAccepted):
        fail(f"startRun answered {accepted!r}")

    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        run = get_run.sync(accepted.run_id, client=client)
        if not isinstance(run, RunDetail):
            fail(f"getRun answered {run!r}")
        if run.status in FINAL:
            break
        if time.monotonic() > deadline:
            fail(f"run {accepted.run_id} still {run.status} after {RUN_TIMEOUT_SECONDS}s")
        time.sleep(0.2)

    if run.status != RunStatus.COMPLETED:
        fail(f"run {run.id} ended {run.status}: {run.error!r}")
    greet = next((node for node in run.nodes if node.id == "greet"), None)
    if greet is None or greet.output is None or greet.output["text"] != "Hello Ada":
        fail(f"node greet of run {run.id} has output {greet and greet.output!r}")
    print(f"client_smoke: run {run.id} of scenario {scenario.id} completed: {greet.output['text']}")


if __name__ == "__main__":
    main()
