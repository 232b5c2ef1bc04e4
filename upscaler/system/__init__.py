"""What the tool needs from the machine: files written whole, its folders, the allocator, runtimes
imported without telemetry. Standard library only."""
