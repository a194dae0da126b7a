"""Brokers of a lab's own: RabbitMQ nodes the console starts, clusters, faults and removes,
apart from the shared broker every other lab runs on (docs/cluster.md).

`local.LocalCluster` runs the nodes from the installed RabbitMQ on this machine.
"""
