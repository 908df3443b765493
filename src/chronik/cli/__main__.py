"""python -m chronik.cli"""

from chronik.cli import main

main()
