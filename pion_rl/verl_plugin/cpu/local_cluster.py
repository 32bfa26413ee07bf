"""A Ray cluster of several nodes on this one machine: the laptop rehearsal of a multi-node run.

    python -m pion_rl.verl_plugin.cpu.local_cluster --nodes 2 --gpus-per-node 1 --address-file FILE

Starts a head and ``--nodes - 1`` more raylets (``ray.cluster_utils.Cluster``), each declaring
``--gpus-per-node`` GPUs (counted by Ray, never touched, as :mod:`.platform` explains) and ``--cpus-per-node``
CPUs, writes the head's address to ``--address-file`` once every node is alive, and holds the cluster until
SIGTERM or SIGINT; then it stops every process it started and prints, per node, the named actors that ran there
(verl names its trainer workers ``<launch prefix>WorkerDict_<placement group>:<local rank>``, a placement
group per node).

Only this cluster is touched: its Ray processes share the holder's fate (Ray's kernel fate sharing on Linux:
killed with the holder, even by SIGKILL), and its temp dir is its own, so a ``ray.init()`` elsewhere on the
machine that looks for "the local cluster" does not find this one, and ``ray stop`` is never needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path


def actors_by_node(cluster) -> dict[str, list[str]]:
    """Node id -> sorted names of the named actors that ran there (alive or dead), from the cluster's GCS."""
    placed: dict[str, list[str]] = {}
    for actor in cluster.global_state.actor_table(None).values():
        if actor["Name"]:
            placed.setdefault(actor["Address"]["NodeID"], []).append(actor["Name"])
    return {node: sorted(names) for node, names in placed.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2, help="Ray nodes, the head included")
    parser.add_argument("--gpus-per-node", type=int, default=1, help="GPUs each node declares to Ray")
    parser.add_argument("--cpus-per-node", type=int, default=8, help="CPUs each node declares to Ray")
    parser.add_argument("--address-file", type=Path, required=True,
                        help="written with the head's address (host:port) once every node is alive")
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 1 or args.cpus_per_node < 1:
        parser.error("--nodes, --gpus-per-node and --cpus-per-node are whole numbers >= 1")

    stop = threading.Event()
    # Short: the sessions' unix sockets live under it, and a socket's path must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="ray-")
    os.environ["RAY_TMPDIR"] = temp_dir  # Cluster records "the local cluster" for ray.init() in <it>/ray/
    Path(temp_dir, "ray").mkdir()

    from ray.cluster_utils import Cluster

    cluster = Cluster()
    try:
        node_args = {"num_cpus": args.cpus_per_node, "num_gpus": args.gpus_per_node, "temp_dir": temp_dir,
                     "include_dashboard": False}
        # A free port for the head's dashboard process: Ray's default (8265) may be another cluster's.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            node_args["dashboard_port"] = probe.getsockname()[1]
        for _ in range(args.nodes):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        # After the nodes: each Node installs a SIGTERM handler that tears its processes down and exits at once.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        partial = args.address_file.with_name(args.address_file.name + ".partial")
        partial.write_text(cluster.address + "\n")
        partial.replace(args.address_file)  # whole or absent: a reader never sees half an address
        print(f"local_cluster: {args.nodes} Ray nodes of {args.gpus_per_node} GPU(s) at {cluster.address} "
              f"(temp dir {temp_dir}, holder pid {os.getpid()})", file=sys.stderr, flush=True)
        stop.wait()
        placed = actors_by_node(cluster)
        head = cluster.head_node.node_id
        for node, names in sorted(placed.items(), key=lambda item: item[0] != head):
            print(f"local_cluster: node {node[:8]}{' (head)' if node == head else ''} ran {' '.join(names)}",
                  file=sys.stderr, flush=True)
    finally:
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
