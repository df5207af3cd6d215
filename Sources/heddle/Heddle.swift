import Admin
import ArgumentParser

@main
extension HeddleCommand {}
