"""Examples that embed lift_graph in applications (not part of the installed package)."""
