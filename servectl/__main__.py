from servectl.cli.main import main

main()
