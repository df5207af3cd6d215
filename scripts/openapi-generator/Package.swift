// swift-tools-version:6.0
// Builds swift-openapi-generator's command-line tool for scripts/generate-openapi. Not part of
// the product: the code it generates is committed (Sources/HTTPAPI/Generated).
import PackageDescription

let package = Package(
    name: "openapi-generator-tool",
    dependencies: [
        .package(url: "https://github.com/apple/swift-openapi-generator.git", from: "1.14.3"),
    ],
    targets: [
        .executableTarget(name: "noop", path: "noop"),
    ]
)
