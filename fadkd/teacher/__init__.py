"""The teacher: live forward or the cache, behind one interface."""
