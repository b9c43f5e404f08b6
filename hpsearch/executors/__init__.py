"""Where populations run: in this process or worker processes (`local`), or as Ray tasks (`ray`)."""
