print("run swift-openapi-generator instead")
