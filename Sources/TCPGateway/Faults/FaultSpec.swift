import JSONRPC

/// A fault as the client asked for it (contract §10), checked against its type: each type takes
/// only its own attributes, and the ones it needs. The schema has already bounded every value.
struct FaultSpec: Equatable {
    typealias Kind = FaultTypeParam
    typealias Stream = FaultStreamParam

    /// Every attribute of every type, defaults filled in for the type's own.
    struct Attributes: Equatable {
        var latency = 0
        var jitter = 0
        var rate = 0
        var averageSize = 0
        var sizeVariation = 0
        var delayUs = 0
        var bytes: Int64 = 0
        var timeout = 0
        var delay = 0
    }

    let name: String
    let kind: Kind
    let stream: Stream
    let toxicity: Double
    let attributes: Attributes

    /// The attributes each type takes, and which of them it needs.
    private static func allowed(_ kind: Kind) -> (all: [String], required: [String]) {
        switch kind {
        case .latency: return (["latency", "jitter"], ["latency"])
        case .bandwidth: return (["rate"], ["rate"])
        case .slicer: return (["averageSize", "sizeVariation", "delayUs"], ["averageSize"])
        case .limitData: return (["bytes"], ["bytes"])
        case .timeout: return (["timeout"], ["timeout"])
        case .resetPeer: return (["timeout"], [])
        case .slowClose: return (["delay"], ["delay"])
        case .stall: return ([], [])
        }
    }

    /// `path` prefixes the names in messages ("faults[1]." for tcp.createClient's).
    init(kind: Kind, stream: Stream, toxicity: Double, attributes given: FaultAttributesParam?, name: String?,
         path: String = "") throws {
        let present: [(String, Int64?)] = [
            ("latency", given?.latency.map(Int64.init)), ("jitter", given?.jitter.map(Int64.init)),
            ("rate", given?.rate.map(Int64.init)), ("averageSize", given?.averageSize.map(Int64.init)),
            ("sizeVariation", given?.sizeVariation.map(Int64.init)), ("delayUs", given?.delayUs.map(Int64.init)),
            ("bytes", given?.bytes), ("timeout", given?.timeout.map(Int64.init)), ("delay", given?.delay.map(Int64.init)),
        ]
        let (all, required) = FaultSpec.allowed(kind)
        for (attribute, value) in present where value != nil && !all.contains(attribute) {
            let takes = all.isEmpty ? "it takes none" : "its attributes: " + all.joined(separator: ", ")
            throw RPCError.invalidParams("'\(path)attributes.\(attribute)' is not an attribute of a \(kind.rawValue) fault (\(takes))")
        }
        for attribute in required where present.first(where: { $0.0 == attribute })?.1 == nil {
            throw RPCError.invalidParams("'\(path)attributes.\(attribute)' is required for a \(kind.rawValue) fault")
        }
        guard toxicity >= 0, toxicity <= 1, !toxicity.isNaN else {
            throw RPCError.invalidParams("'\(path)toxicity' must be between 0 and 1")
        }
        var a = Attributes()
        a.latency = given?.latency ?? 0
        a.jitter = given?.jitter ?? 0
        a.rate = given?.rate ?? 0
        a.averageSize = given?.averageSize ?? 0
        a.sizeVariation = given?.sizeVariation ?? 0
        a.delayUs = given?.delayUs ?? 0
        a.bytes = given?.bytes ?? 0
        a.timeout = given?.timeout ?? 0
        a.delay = given?.delay ?? 0
        self.kind = kind
        self.stream = stream
        self.toxicity = toxicity
        self.attributes = a
        self.name = name ?? "\(kind.rawValue)_\(stream.rawValue)"
    }

    init(_ p: FaultSpecParam, path: String) throws {
        try self.init(kind: p.type, stream: p.stream, toxicity: p.toxicity, attributes: p.attributes, name: p.name, path: path)
    }

    /// tcp.createClient's list: each checked, names unique among them.
    static func list(_ params: [FaultSpecParam]?) throws -> [FaultSpec] {
        var specs: [FaultSpec] = []
        for (index, p) in (params ?? []).enumerated() {
            let spec = try FaultSpec(p, path: "faults[\(index)].")
            if specs.contains(where: { $0.name == spec.name }) {
                throw RPCError.invalidParams("'faults[\(index)].name': a fault named '\(spec.name)' comes earlier in the list")
            }
            specs.append(spec)
        }
        return specs
    }

    /// The type's attributes as fault.list shows them, defaults filled in.
    var attributesJSON: JSONValue {
        var object = JSONObject()
        let a = attributes
        for attribute in FaultSpec.allowed(kind).all {
            let value: Int64
            switch attribute {
            case "latency": value = Int64(a.latency)
            case "jitter": value = Int64(a.jitter)
            case "rate": value = Int64(a.rate)
            case "averageSize": value = Int64(a.averageSize)
            case "sizeVariation": value = Int64(a.sizeVariation)
            case "delayUs": value = Int64(a.delayUs)
            case "bytes": value = a.bytes
            case "timeout": value = Int64(a.timeout)
            default: value = Int64(a.delay)
            }
            object[attribute] = .int(value)
        }
        return .object(object)
    }

    func json(active: Bool?) -> JSONValue {
        var object: JSONObject = [
            "name": .string(name), "type": .string(kind.rawValue), "stream": .string(stream.rawValue),
            "toxicity": toxicity == toxicity.rounded() ? .int(Int64(toxicity)) : .double(toxicity),
            "attributes": attributesJSON,
        ]
        if let active { object["active"] = .bool(active) }
        return .object(object)
    }
}

/// Name checks shared by connections and servers.
extension Array where Element == FaultSpec {
    func ensureUnused(_ name: String, path: String = "") throws {
        if contains(where: { $0.name == name }) {
            throw RPCError.invalidParams("'\(path)name': the handle already has a fault named '\(name)'")
        }
    }
}
