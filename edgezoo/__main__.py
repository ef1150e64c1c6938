from edgezoo.cli import main

main()
