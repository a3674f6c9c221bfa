"""The device mesh, sharding rules and global batches."""
