from inspectflow.cli import main

main()
