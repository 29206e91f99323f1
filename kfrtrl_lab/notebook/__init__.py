"""What the notebooks compute (``experiments``), draw (``figures``) and control (``widgets``), and
how they become offline reports (``reports``). Every function here is plain Python a test can call
without a kernel; the notebooks only choose sizes and tell the story."""
