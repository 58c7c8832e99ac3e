import Hummingbird

/// The customer console (server-rendered pages).
enum Console {
    static func routes(_ router: Router<BasicRequestContext>, _ server: ServerEnvironment) {}
}
