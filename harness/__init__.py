"""Running corral's processes on this machine: the embedded nats-server, corral child processes, the chaos suite."""
