#if canImport(Glibc)
import Glibc
#endif
import CWarmstartShim
import WarmstartIO

/// Hot upgrade (Docs/HANDOFF.md): descriptors a device takes over from the previous process
/// instead of probing.
struct Adoption {
    var connectionFD: Int32?
    var listenFD: Int32?
    /// Replaces the driver's `attach` for the adopted connection (the vhost-user driver rebuilds
    /// the handed-over session instead of starting a fresh one).
    var attach: ((Device) -> Void)?
}

extension Bus {
    /// Runs `body` on the loop thread and returns its result; inline when the bus has not started
    /// (no loop thread yet) or when called on the loop thread.
    public func sync<T>(_ body: @escaping () -> T) -> T {
        if !running || loop.isOnLoopThread { return body() }
        let done = ConditionLock()
        var result: T?
        loop.post {
            let r = body()
            done.withLock { result = r }
            done.broadcast()
        }
        done.withLock {
            while result == nil { _ = done.wait(untilMonotonicNs: ws_monotonic_ns() + 1_000_000_000) }
        }
        return result!
    }

    /// Before `start`: device `index` starts from descriptors handed over by the previous process —
    /// an already-connected socket or TAP fd (the device goes straight to `negotiating` and to
    /// `attach`, or the driver's attach) and/or a listening socket (accepting resumes on it; this
    /// process now owns its path). No probe, no connect, no bind. The bus owns the descriptors.
    public func adopt(deviceAt index: Int, connectionFD: Int32?, listeningFD: Int32?, attach: ((Device) -> Void)? = nil) {
        precondition(!running, "Bus.adopt after start")
        devices[index].adoption = Adoption(connectionFD: connectionFD, listenFD: listeningFD, attach: attach)
    }

    /// Loop thread, from `start`.
    func beginAdopted(_ d: Device, _ a: Adoption) {
        let now = ws_monotonic_ns()
        d.probeStartNs = now
        d.connectedNs = 0
        d.startedNs = 0
        if let l = a.listenFD {
            d.listenFD = l
            d.ownsSocketFile = d.spec.listens
        }
        transition(d, to: .probing)
        guard let fd = a.connectionFD else {
            if d.listenFD >= 0 { acceptNext(d) } else { beginProbe(d) }
            return
        }
        d.fd = fd
        d.generation += 1
        d.connectedNs = now
        guard let driver = drivers(for: d.kind) else {
            failed(d, reason: "no driver registered for \(d.kind.rawValue) ports (adopting a handed-over connection)")
            return
        }
        d.attachedDriver = driver
        transition(d, to: .negotiating)
        if let attach = a.attach { attach(d) } else { driver.attach(device: d, fd: fd, bus: self) }
    }

    /// Hot upgrade, freeze (loop thread): stops accepting on every listening port that waits for a
    /// front-end, so no connection lands in this process while its state is described.
    public func freezeAccepting() {
        for d in devices where d.listenFD >= 0 && d.fd < 0 {
            d.acceptFrozen = true
            if let op = d.pendingOp { loop.cancel(op) }
        }
    }

    /// Loop thread: true once no frozen port has an accept outstanding; the names of ports where a
    /// front-end connected while freezing (the freeze must fail: their state was not described).
    public func acceptingFrozenState() -> (settled: Bool, raced: [String]) {
        let frozen = devices.filter(\.acceptFrozen)
        return (frozen.allSatisfy { $0.pendingOp == nil || $0.fd >= 0 }, frozen.filter { $0.fd >= 0 }.map(\.name))
    }

    /// Undoes `freezeAccepting` (a handoff rolled back): accepting resumes.
    public func thawAccepting() {
        for d in devices where d.acceptFrozen {
            d.acceptFrozen = false
            if d.fd < 0, d.listenFD >= 0, d.pendingOp == nil, d.state == .probing { acceptNext(d) }
        }
    }

    /// Hot upgrade, after the commit: lets go of every device WITHOUT shutdown(2) (it acts on the
    /// socket, which the new process shares — the guest would be disconnected) and WITHOUT
    /// unlinking socket paths (the new process serves them). Cancels pending operations, detaches
    /// the drivers, closes this process's descriptors, stops the loop thread. Call after the
    /// datapath's threads stopped. `stop` does nothing afterwards.
    public func release() {
        guard running else { return }
        let done = ConditionLock()
        var finished = false
        loop.post { [self] in
            for d in devices {
                if d.state == .started { for h in leftHooksForRelease { h(d) } }
                if let op = d.pendingOp { loop.cancel(op); d.pendingOp = nil }
                if let drv = d.attachedDriver { d.attachedDriver = nil; drv.detach(device: d, bus: self) }
                if d.fd >= 0 { Glibc.close(d.fd); d.fd = -1 }
                if d.listenFD >= 0 { Glibc.close(d.listenFD); d.listenFD = -1 }
                d.ownsSocketFile = false
                d.reason = "handed over to the new process"
                transition(d, to: .stopped)
            }
            done.withLock { finished = true }
            done.broadcast()
        }
        let deadline = ws_monotonic_ns() + 500_000_000
        done.withLock { while !finished && done.wait(untilMonotonicNs: deadline) {} }
        running = false
        if ownsLoopThread {
            loop.stopAndJoin()
            loop.shutdown()
        }
    }
}
