import NodeCommands

/// `fulcrum`: the node daemon (serve, agent, restore, recover). No fault injection here.
@main
struct FulcrumMain {
    static func main() async { await Fulcrum.main() }
}
