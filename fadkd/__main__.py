from fadkd.cli import main

main()
