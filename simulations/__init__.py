"""The top layer: scenarios, data sets, partitioning, the engines and the command line."""
