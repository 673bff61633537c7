"""The ServerApp: FedAvg over all connected nodes, wrapped in edgescope's RecordedStrategy so
that each round (who replied, how fast, who failed or timed out, the aggregated metrics) goes
into the server's edgescope run."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits_fl.task import initial_weights
from edgescope.integrations.flower import RecordedStrategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    nodes = int(cfg["min-nodes"])
    strategy = RecordedStrategy(
        FedAvg(
            fraction_evaluate=float(cfg["fraction-evaluate"]),
            min_train_nodes=nodes,
            min_evaluate_nodes=nodes,
            min_available_nodes=nodes,
        )
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_weights()),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        train_config=ConfigRecord({"lr": float(cfg["learning-rate"])}),
    )
    print(f"final evaluation: {result.evaluate_metrics_clientapp}")
