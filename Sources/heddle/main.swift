import Admin

await HeddleCommand.main()
