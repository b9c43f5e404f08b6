"""What a person reads: the stage's tables and report (`report`), its PNG plots (`plots`), the
final table (`final`), and the GitHub step summary and JUnit XML (`ci`)."""
