import { describe, expect, it } from "@effect/vitest"
import {
  authority,
  ConnectHandshake,
  type ConnectReply,
  ConnectReplyReader,
  encodeConnectRequest,
  encodeSocks5Connect,
  encodeSocks5Password,
  type Handshake,
  ipv6Bytes,
  type MalformedReply,
  readSocks5Reply,
  socks5Handshake,
  socks5ReplyMeaning,
  type Step
} from "../src/internal/proxyHandshake.js"

/** Latin1: every char of `s` becomes one byte, so fixtures can hold any byte. */
const bytes = (s: string): Uint8Array => Uint8Array.from(s, (c) => c.charCodeAt(0))
const text = (b: Uint8Array): string => Buffer.from(b).toString("latin1")

/** The input cut at each of `cuts` (ascending offsets). */
const pieces = (input: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let from = 0
  for (const cut of [...cuts, input.length]) {
    out.push(input.slice(from, cut))
    from = cut
  }
  return out
}

/** Every way the tests feed an input: whole, split in two at every offset, and byte by byte. */
const splits = (input: Uint8Array): Array<{ readonly name: string; readonly pieces: Array<Uint8Array> }> => [
  { name: "whole", pieces: [input] },
  ...Array.from({ length: input.length - 1 }, (_, i) => ({ name: `split at ${i + 1}`, pieces: pieces(input, [i + 1]) })),
  { name: "byte by byte", pieces: pieces(input, Array.from({ length: input.length - 1 }, (_, i) => i + 1)) }
]

// --- CONNECT -------------------------------------------------------------------

/** A reply's outcome whatever the pieces: `trailing` counts every byte after the head, fed or not. */
const readReply = (
  chunks: ReadonlyArray<Uint8Array>,
  maxSize?: number
): ConnectReply | MalformedReply | "incomplete" => {
  const reader = new ConnectReplyReader(maxSize)
  for (let i = 0; i < chunks.length; i++) {
    const outcome = reader.push(chunks[i]!)
    if (outcome === undefined) continue
    if (outcome._tag === "Malformed") return outcome
    const unfed = chunks.slice(i + 1).reduce((n, c) => n + c.length, 0)
    return { ...outcome, trailing: outcome.trailing + unfed }
  }
  return "incomplete"
}

interface ReplyFixture {
  readonly name: string
  readonly reply: string
  readonly maxSize?: number
  readonly expected: ReturnType<typeof readReply>
}

const replyFixtures: Array<ReplyFixture> = [
  {
    name: "200 Connection established",
    reply: "HTTP/1.1 200 Connection established\r\n\r\n",
    expected: { _tag: "Reply", status: 200, statusText: "Connection established", trailing: 0 }
  },
  {
    name: "HTTP/1.0 200 with fields, blanks around values and repeated names allowed",
    reply: "HTTP/1.0 200 OK\r\nProxy-Agent:  squid \r\nVia: a\r\nvia: b\r\n\r\n",
    expected: { _tag: "Reply", status: 200, statusText: "OK", trailing: 0 }
  },
  {
    name: "no reason phrase, with or without its space",
    reply: "HTTP/1.1 204\r\n\r\n",
    expected: { _tag: "Reply", status: 204, statusText: "", trailing: 0 }
  },
  {
    name: "an empty reason phrase after its space",
    reply: "HTTP/1.1 200 \r\n\r\n",
    expected: { _tag: "Reply", status: 200, statusText: "", trailing: 0 }
  },
  {
    name: "bytes after a 2xx head are counted, not read",
    reply: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    expected: { _tag: "Reply", status: 200, statusText: "OK", trailing: 5 }
  },
  {
    name: "interim 1xx heads are skipped",
    reply: "HTTP/1.1 100 Continue\r\nX: 1\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    expected: { _tag: "Reply", status: 200, statusText: "OK", trailing: 0 }
  },
  {
    name: "101 is final (and not a 2xx)",
    reply: "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    expected: { _tag: "Reply", status: 101, statusText: "Switching Protocols", trailing: 0 }
  },
  {
    name: "407 with its challenge and a body",
    reply: "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 3\r\n\r\nno!",
    expected: { _tag: "Reply", status: 407, statusText: "Proxy Authentication Required", trailing: 3 }
  },
  {
    name: "a head of exactly maxSize bytes",
    reply: "HTTP/1.1 200 OK\r\nX: 123456\r\n\r\n",
    maxSize: 30,
    expected: { _tag: "Reply", status: 200, statusText: "OK", trailing: 0 }
  },
  {
    name: "a head one byte over maxSize",
    reply: "HTTP/1.1 200 OK\r\nX: 1234567\r\n\r\n",
    maxSize: 30,
    expected: { _tag: "Malformed", detail: "its head is larger than 30 bytes" }
  },
  {
    name: "interim heads count against maxSize",
    reply: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    maxSize: 40,
    expected: { _tag: "Malformed", detail: "its head is larger than 40 bytes" }
  },
  {
    name: "not HTTP at all",
    reply: "SSH-2.0-OpenSSH_9.6\r\n\r\n",
    expected: { _tag: "Malformed", detail: "its status line is not HTTP/1.1's: \"SSH-2.0-OpenSSH_9.6\"" }
  },
  {
    name: "a status that is not three digits",
    reply: "HTTP/1.1 2OO OK\r\n\r\n",
    expected: { _tag: "Malformed", detail: "its status line is not HTTP/1.1's: \"HTTP/1.1 2OO OK\"" }
  },
  {
    name: "HTTP/2's status line",
    reply: "HTTP/2 200\r\n\r\n",
    expected: { _tag: "Malformed", detail: "its status line is not HTTP/1.1's: \"HTTP/2 200\"" }
  },
  {
    name: "a bare LF inside the head",
    reply: "HTTP/1.1 200 OK\nX: y\r\n\r\n",
    expected: { _tag: "Malformed", detail: "its status line is not HTTP/1.1's: \"HTTP/1.1 200 OK\\nX: y\"" }
  },
  {
    name: "a field line without a colon",
    reply: "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    expected: { _tag: "Malformed", detail: "a header line is malformed: \"no colon here\"" }
  },
  {
    name: "an obsolete line folding",
    reply: "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    expected: { _tag: "Malformed", detail: "a header line is malformed: \" b\"" }
  },
  {
    name: "a space before the colon",
    reply: "HTTP/1.1 200 OK\r\nX : a\r\n\r\n",
    expected: { _tag: "Malformed", detail: "a header line is malformed: \"X : a\"" }
  },
  {
    name: "a control byte in a value",
    reply: "HTTP/1.1 200 OK\r\nX: a\u0000b\r\n\r\n",
    expected: { _tag: "Malformed", detail: "a header line is malformed: \"X: a\\u0000b\"" }
  },
  {
    name: "a head still incomplete",
    reply: "HTTP/1.1 200 OK\r\nX: y\r\n",
    expected: "incomplete"
  }
]

describe("the CONNECT reply reader", () => {
  for (const fixture of replyFixtures) {
    it(`${fixture.name}: the same outcome fed whole, split at every offset, byte by byte`, () => {
      for (const split of splits(bytes(fixture.reply))) {
        expect(readReply(split.pieces, fixture.maxSize), split.name).toEqual(fixture.expected)
      }
    })
  }

  it("answers the same outcome once it has one", () => {
    const reader = new ConnectReplyReader()
    const first = reader.push(bytes("HTTP/1.1 403 Forbidden\r\n\r\n"))
    expect(reader.push(bytes("more"))).toBe(first)
  })

  it("a reply without an end fails once maxSize bytes arrived, not before", () => {
    const reader = new ConnectReplyReader(64)
    expect(reader.push(bytes(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(40)}`))).toBeUndefined()
    expect(reader.push(bytes("a".repeat(100)))).toEqual({ _tag: "Malformed", detail: "its head is larger than 64 bytes" })
  })

  it("is bounded at 16 KiB by default", () => {
    const reader = new ConnectReplyReader()
    expect(reader.push(bytes(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(16 * 1024)}`))).toEqual({
      _tag: "Malformed",
      detail: "its head is larger than 16384 bytes"
    })
  })
})

describe("the CONNECT request", () => {
  it("names the target as its authority and in Host; no Proxy-Authorization without credentials", () => {
    expect(text(encodeConnectRequest("example.com", 443, undefined))).toBe(
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
    )
  })

  it("brackets an IPv6 address", () => {
    expect(text(encodeConnectRequest("2001:db8::1", 8443, undefined))).toBe(
      "CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n"
    )
    expect(authority("127.0.0.1", 80)).toBe("127.0.0.1:80")
  })

  it("sends Basic credentials of user:pass in UTF-8", () => {
    const request = text(encodeConnectRequest("example.com", 443, { username: "alice", password: "s3cret:p@ss€" }))
    const basic = Buffer.from("alice:s3cret:p@ss€", "utf8").toString("base64")
    expect(request).toBe(`CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic ${basic}\r\n\r\n`)
  })
})

/** Runs a handshake over the proxy's replies, each fed in `pieces`; returns what was sent and the last step. */
const drive = (handshake: Handshake, replies: ReadonlyArray<ReadonlyArray<Uint8Array>>) => {
  const sent: Array<string> = [text(handshake.greeting)]
  let step: Step = { _tag: "Pending" }
  for (const reply of replies) {
    for (let i = 0; i < reply.length; i++) {
      step = handshake.receive(reply[i]!)
      if (step._tag === "Pending") continue
      if (step._tag === "Established") {
        const unfed = reply.slice(i + 1).reduce((n, c) => n + c.length, 0)
        step = { _tag: "Established", trailing: step.trailing + unfed }
      }
      break
    }
    if (step._tag === "Send") sent.push(text(step.bytes))
    else break
  }
  return { sent, step }
}

describe("the CONNECT handshake", () => {
  const key = "http://127.0.0.1:3128"
  const outcome = (reply: string, credentials?: { username: string; password: string }) =>
    splits(bytes(reply)).map((split) =>
      drive(new ConnectHandshake(key, "example.com", 443, credentials), [split.pieces]).step
    )

  it("a 2xx opens the tunnel; bytes after its head are counted", () => {
    for (const step of outcome("HTTP/1.1 200 Connection established\r\n\r\n")) {
      expect(step).toEqual({ _tag: "Established", trailing: 0 })
    }
    for (const step of outcome("HTTP/1.1 200 OK\r\n\r\n\u0016\u0003\u0001")) {
      expect(step).toEqual({ _tag: "Established", trailing: 3 })
    }
  })

  it("a 407 without credentials sent: authentication required; with: the credentials refused", () => {
    const reply = "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
    for (const step of outcome(reply)) {
      expect(step).toEqual({
        _tag: "Failed",
        detail: `proxy ${key} requires authentication (407 Proxy Authentication Required)`
      })
    }
    for (const step of outcome(reply, { username: "alice", password: "hunter2" })) {
      expect(step).toEqual({ _tag: "Failed", detail: `proxy ${key} refused the credentials (407 Proxy Authentication Required)` })
    }
  })

  it("any other status refuses the CONNECT, with the status and its reason phrase", () => {
    for (const step of outcome("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")) {
      expect(step).toEqual({ _tag: "Failed", detail: `proxy ${key} refused CONNECT to example.com:443: 403 Forbidden` })
    }
    for (const step of outcome("HTTP/1.1 502\r\n\r\n")) {
      expect(step).toEqual({ _tag: "Failed", detail: `proxy ${key} refused CONNECT to example.com:443: 502` })
    }
  })

  it("a malformed reply fails, saying what is wrong", () => {
    for (const step of outcome("HTTP/1.1 200 OK\r\nbad\r\n\r\n")) {
      expect(step).toEqual({ _tag: "Failed", detail: `proxy ${key} sent a malformed reply to CONNECT: a header line is malformed: "bad"` })
    }
  })

  it("says what a close during it means", () => {
    expect(new ConnectHandshake(key, "example.com", 443, undefined).closedDetail).toBe(
      `proxy ${key} closed the connection during CONNECT`
    )
  })
})

// --- SOCKS5 ------------------------------------------------------------------------

const socksReplies: Array<{ readonly name: string; readonly reply: Array<number>; readonly expected: ReturnType<typeof readSocks5Reply> }> = [
  {
    name: "IPv4 bound address",
    reply: [5, 0, 0, 1, 10, 0, 0, 7, 0x1f, 0x90],
    expected: { _tag: "Succeeded", length: 10 }
  },
  {
    name: "IPv6 bound address",
    reply: [5, 0, 0, 4, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 80],
    expected: { _tag: "Succeeded", length: 22 }
  },
  {
    name: "domain name bound address",
    reply: [5, 0, 0, 3, 9, ...bytes("proxy.lan"), 0x04, 0x38],
    expected: { _tag: "Succeeded", length: 16 }
  },
  {
    name: "a failure code, known from its second byte",
    reply: [5, 5, 0, 1, 0, 0, 0, 0, 0, 0],
    expected: { _tag: "Refused", code: 5 }
  },
  {
    name: "not version 5",
    reply: [4, 0x5a, 0, 0, 0, 0, 0, 0],
    expected: { _tag: "Malformed", detail: "its reply's version is 0x04, not 0x05" }
  },
  {
    name: "an unknown address type",
    reply: [5, 0, 0, 2, 0, 0, 0, 0, 0, 0],
    expected: { _tag: "Malformed", detail: "its reply's address type is 0x02" }
  }
]

describe("the SOCKS5 reply reader", () => {
  for (const fixture of socksReplies) {
    it(`${fixture.name}: Incomplete on every shorter prefix until it can tell, then the same outcome`, () => {
      const input = Uint8Array.from(fixture.reply)
      const first = Array.from({ length: input.length + 1 }, (_, n) => readSocks5Reply(input.subarray(0, n)))
        .findIndex((reply) => reply._tag !== "Incomplete")
      for (let n = 0; n <= input.length; n++) {
        const reply = readSocks5Reply(input.subarray(0, n))
        expect(reply, `${n} bytes`).toEqual(n < first ? { _tag: "Incomplete" } : fixture.expected)
      }
      // Bytes after the reply are not the reply's.
      expect(readSocks5Reply(Uint8Array.from([...fixture.reply, 1, 2, 3]))).toEqual(fixture.expected)
    })
  }

  it("says what each reply code means, as RFC 1928 words it", () => {
    expect(Array.from({ length: 9 }, (_, code) => socks5ReplyMeaning(code))).toEqual([
      "succeeded",
      "general SOCKS server failure",
      "connection not allowed by ruleset",
      "network unreachable",
      "host unreachable",
      "connection refused",
      "TTL expired",
      "command not supported",
      "address type not supported"
    ])
    expect(socks5ReplyMeaning(0x42)).toBe("unknown reply code 0x42")
    expect(socks5ReplyMeaning(0xfe)).toBe("unknown reply code 0xFE")
  })
})

describe("SOCKS5 requests", () => {
  it("a CONNECT to an IPv4, an IPv6 address or a name (ATYP 1, 4, 3)", () => {
    expect(Array.from(encodeSocks5Connect("127.0.0.1", 443)!)).toEqual([5, 1, 0, 1, 127, 0, 0, 1, 1, 0xbb])
    expect(Array.from(encodeSocks5Connect("::1", 80)!)).toEqual([5, 1, 0, 4, ...new Array(15).fill(0), 1, 0, 80])
    expect(Array.from(encodeSocks5Connect("example.com", 8080)!)).toEqual([5, 1, 0, 3, 11, ...bytes("example.com"), 0x1f, 0x90])
    expect(encodeSocks5Connect("a".repeat(255), 1)!.length).toBe(4 + 1 + 255 + 2)
    expect(encodeSocks5Connect("a".repeat(256), 1)).toBeUndefined()
  })

  it("IPv6 addresses in every written form", () => {
    const cases: Array<[string, Array<number>]> = [
      ["::", new Array(16).fill(0)],
      ["2001:db8::ff00:42:8329", [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0x42, 0x83, 0x29]],
      ["fe80::", [0xfe, 0x80, ...new Array(14).fill(0)]],
      ["1:2:3:4:5:6:7:8", [0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]],
      ["::ffff:192.0.2.1", [...new Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 1]],
      ["64:ff9b::10.1.2.3", [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0, 10, 1, 2, 3]]
    ]
    for (const [address, expected] of cases) expect(Array.from(ipv6Bytes(address)), address).toEqual(expected)
  })

  it("RFC 1929's username/password request; each 1 to 255 bytes", () => {
    expect(Array.from(encodeSocks5Password({ username: "alice", password: "pw" })!)).toEqual([1, 5, ...bytes("alice"), 2, ...bytes("pw")])
    expect(encodeSocks5Password({ username: "", password: "pw" })).toBeUndefined()
    expect(encodeSocks5Password({ username: "u", password: "" })).toBeUndefined()
    expect(encodeSocks5Password({ username: "u", password: "é".repeat(128) })).toBeUndefined()
    expect(encodeSocks5Password({ username: "u".repeat(255), password: "p".repeat(255) })!.length).toBe(3 + 510)
  })
})

describe("the SOCKS5 handshake", () => {
  const key = "socks5://127.0.0.1:1080"
  const make = (credentials?: { username: string; password: string }, destination = "example.com") => {
    const handshake = socks5Handshake(key, "example.com:443", destination, 443, credentials)
    if ("_tag" in handshake) throw new Error(handshake.detail)
    return handshake
  }
  const connectRequest = text(Uint8Array.from([5, 1, 0, 3, 11, ...bytes("example.com"), 1, 0xbb]))
  const success = Uint8Array.from([5, 0, 0, 1, 10, 0, 0, 7, 0x1f, 0x90])

  /** Drives the handshake over `replies`, each fed whole, split at every offset and byte by byte. */
  const everySplit = (
    credentials: { username: string; password: string } | undefined,
    replies: ReadonlyArray<Uint8Array>,
    check: (outcome: ReturnType<typeof drive>) => void
  ) => {
    for (let r = 0; r < replies.length; r++) {
      for (const split of splits(replies[r]!)) {
        const fed = replies.map((reply, i) => i === r ? split.pieces : [reply])
        check(drive(make(credentials), fed))
      }
    }
  }

  it("without credentials: offers no authentication, then CONNECT to the name", () => {
    everySplit(undefined, [Uint8Array.from([5, 0]), success], (outcome) => {
      expect(outcome).toEqual({ sent: ["\u0005\u0001\u0000", connectRequest], step: { _tag: "Established", trailing: 0 } })
    })
  })

  it("with credentials: offers both; username/password when the proxy picks it", () => {
    const password = text(Uint8Array.from([1, 5, ...bytes("alice"), 6, ...bytes("s3cret")]))
    everySplit({ username: "alice", password: "s3cret" }, [Uint8Array.from([5, 2]), Uint8Array.from([1, 0]), success], (outcome) => {
      expect(outcome).toEqual({
        sent: ["\u0005\u0002\u0000\u0002", password, connectRequest],
        step: { _tag: "Established", trailing: 0 }
      })
    })
    // A proxy that needs none skips the sub-negotiation.
    everySplit({ username: "alice", password: "s3cret" }, [Uint8Array.from([5, 0]), success], (outcome) => {
      expect(outcome.step).toEqual({ _tag: "Established", trailing: 0 })
    })
  })

  it("an address is sent as one: no name for the proxy to resolve", () => {
    const { sent } = drive(make(undefined, "::1"), [[Uint8Array.from([5, 0])]])
    expect(sent[1]).toBe(text(Uint8Array.from([5, 1, 0, 4, ...new Array(15).fill(0), 1, 1, 0xbb])))
  })

  it("bytes after the reply are counted", () => {
    everySplit(undefined, [Uint8Array.from([5, 0]), Uint8Array.from([...success, 0x16, 3])], (outcome) => {
      expect(outcome.step).toEqual({ _tag: "Established", trailing: 2 })
    })
  })

  it("refusals: reply codes, refused credentials, no acceptable method, a method not offered", () => {
    const failures: Array<[Array<Uint8Array>, string]> = [
      [[Uint8Array.from([5, 0]), Uint8Array.from([5, 5, 0, 1, 0, 0, 0, 0, 0, 0])], `proxy ${key} refused CONNECT to example.com:443: connection refused`],
      [[Uint8Array.from([5, 0]), Uint8Array.from([5, 0x42, 0, 1, 0, 0, 0, 0, 0, 0])], `proxy ${key} refused CONNECT to example.com:443: unknown reply code 0x42`],
      [[Uint8Array.from([5, 0]), Uint8Array.from([5, 1])], `proxy ${key} refused CONNECT to example.com:443: general SOCKS server failure`],
      [[Uint8Array.from([5, 0xff])], `proxy ${key} accepts none of the authentication methods offered (no authentication)`],
      [[Uint8Array.from([5, 2])], `proxy ${key} chose an authentication method that was not offered (0x02)`],
      [[Uint8Array.from([4, 0])], `proxy ${key} did not answer as a SOCKS5 server (version 0x04)`],
      [[Uint8Array.from([5, 0]), Uint8Array.from([5, 0, 0, 9, 0, 0])], `proxy ${key} sent a malformed SOCKS5 reply: its reply's address type is 0x09`]
    ]
    for (const [replies, detail] of failures) {
      everySplit(undefined, replies, (outcome) => expect(outcome.step).toEqual({ _tag: "Failed", detail }))
    }
    // Bytes beyond a message, before the request they would answer was sent (in the same read: a later one is read as the answer).
    expect(drive(make(), [[Uint8Array.from([5, 0, 5, 0])]]).step).toEqual({
      _tag: "Failed",
      detail: `proxy ${key} sent 2 bytes ahead of the SOCKS5 handshake`
    })
    const withCredentials: Array<[Array<Uint8Array>, string]> = [
      [[Uint8Array.from([5, 2]), Uint8Array.from([1, 1])], `proxy ${key} refused the credentials`],
      [[Uint8Array.from([5, 0xff])], `proxy ${key} accepts none of the authentication methods offered (no authentication, username/password)`]
    ]
    for (const [replies, detail] of withCredentials) {
      everySplit({ username: "alice", password: "s3cret" }, replies, (outcome) => {
        expect(outcome.step).toEqual({ _tag: "Failed", detail })
      })
    }
  })

  it("credentials or a name that do not fit are refused before connecting, without showing the credentials", () => {
    for (const credentials of [{ username: "", password: "s3cret" }, { username: "alice", password: "x".repeat(256) }]) {
      const refused = socks5Handshake(key, "example.com:443", "example.com", 443, credentials)
      expect(refused).toEqual({ _tag: "Failed", detail: `proxy ${key}: SOCKS5 takes a username and a password of 1 to 255 bytes each (RFC 1929)` })
    }
    expect(socks5Handshake(key, "x:1", "a".repeat(256), 1, undefined)).toEqual({
      _tag: "Failed",
      detail: `proxy ${key}: the host name of x:1 is longer than SOCKS5's 255 bytes`
    })
  })

  it("says what a close during it means", () => {
    expect(make().closedDetail).toBe(`proxy ${key} closed the connection during the SOCKS5 handshake`)
  })
})
