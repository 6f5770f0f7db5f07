import FaultInjection
import NodeCommands
import Server

/// `fulcrum-fault-node`: the node daemon with fault injection, for the fault suites and the
/// nemesis only. With `fault_injection: true` its log goes through the fault VFS and
/// `/admin/fault` can stall, fail or kill it.
@main
struct FaultNodeMain {
    static func main() async {
        NodeBuild.enableFaultInjection(FaultInjectionSupport(
            install: { try StorageFaults.install() },
            routes: ServerExtension(name: "faults") { router, clock in FaultAPI(clock: clock).addRoutes(to: router) }
        ))
        await Fulcrum.main()
    }
}
