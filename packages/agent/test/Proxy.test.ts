/**
 * Proxy selection: the environment's variables as curl and Go read them,
 * explicit settings, and `NO_PROXY` as curl's `Curl_check_noproxy` matches
 * it (its unit test, unit1614, is ported row for row).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as util from "node:util"
import * as internal from "../src/internal/proxy.js"
import * as Proxy from "../src/Proxy.js"

/** Whether `url` goes direct under a config whose only proxy is `all` and whose list is `noProxy`. */
const direct = (noProxy: string, url: string): boolean =>
  Option.isNone(Proxy.select(Proxy.make({ all: "http://proxy.internal:3128", noProxy }), url))

/** Whether `host` goes direct under the list `noProxy`: what the Agent asks of each origin. */
const bypasses = (noProxy: string, host: string): boolean =>
  internal.endpointFor(Proxy.make({ all: "http://proxy.internal:3128", noProxy }), "http", host) === undefined

/** The URL of a request to `host` (an IPv6 address gets its brackets). */
const urlOf = (host: string): string => `http://${host.includes(":") ? `[${host}]` : host}/`

/** What `fn` throws, as the error it must be. */
const thrown = (fn: () => unknown): Proxy.ProxyConfigError => {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(Proxy.ProxyConfigError)
    return error as Proxy.ProxyConfigError
  }
  throw new Error("did not throw")
}

/** Everything an error shows: message, detail, stack, JSON and inspection. */
const shownBy = (error: Proxy.ProxyConfigError): string =>
  [error.message, error.detail, String(error), error.stack, JSON.stringify(error), util.inspect(error)].join("\n")

// --- curl's tests/unit/unit1614.c -------------------------------------------

/** `list4`: (address, network, prefix, matches). A prefix of 0 compares the whole address. */
const cidr4: ReadonlyArray<readonly [string, string, number, boolean]> = [
  ["192.160.0.1", "192.160.0.1", 33, false],
  ["192.160.0.1", "192.160.0.1", 32, true],
  ["192.160.0.1", "192.160.0.1", 0, true],
  ["192.160.0.1", "192.160.0.1", 24, true],
  ["192.160.0.1", "192.160.0.1", 26, true],
  ["192.160.0.1", "192.160.0.1", 20, true],
  ["192.160.0.1", "192.160.0.1", 18, true],
  ["192.160.0.1", "192.160.0.1", 12, true],
  ["192.160.0.1", "192.160.0.1", 8, true],
  ["192.160.0.1", "10.0.0.1", 8, false],
  ["192.160.0.1", "10.0.0.1", 32, false],
  ["192.160.0.1", "10.0.0.1", 0, false]
]

/** `list6`: (address, network, prefix, matches). */
const cidr6: ReadonlyArray<readonly [string, string, number, boolean]> = [
  ["::1", "::1", 0, true],
  ["::1", "::1", 128, true],
  ["::1", "0:0::1", 128, true],
  ["::1", "0:0::1", 129, false],
  ["fe80::ab47:4396:55c9:8474", "fe80::ab47:4396:55c9:8474", 64, true]
]

const token128 = "localhost,127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1." +
  "127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127." +
  "0.0.1.127.0.0.1.127.0.0."
const token127 = "localhost,127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1." +
  "127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127.0.0.1.127." +
  "0.0.1.127.0.0.1.127.0.0"

/** `list`: (host, NO_PROXY, matches), in the C's order. */
const noproxy: ReadonlyArray<readonly [string, string, boolean]> = [
  // Blank-separated: the list ends after `localhost`.
  ["www.example.com", "localhost .example.com .example.de", false],
  ["www.example.com", "localhost,.example.com,.example.de", true],
  ["www.example.com.", "localhost,.example.com,.example.de", true],
  ["example.com", "localhost,.example.com,.example.de", true],
  ["example.com.", "localhost,.example.com,.example.de", true],
  ["www.example.com", "localhost,.example.com.,.example.de", true],
  ["www.example.com", "localhost,www.example.com.,.example.de", true],
  ["example.com", "localhost,example.com,.example.de", true],
  ["example.com.", "localhost,example.com,.example.de", true],
  ["nexample.com", "localhost,example.com,.example.de", false],
  ["www.example.com", "localhost,example.com,.example.de", true],
  ["127.0.0.1", "127.0.0.1,localhost", true],
  ["127.0.0.1", "127.0.0.1,localhost,", true],
  ["127.0.0.1", "127.0.0.1/8,localhost,", true],
  ["127.0.0.1", "127.0.0.1/28,localhost,", true],
  ["127.0.0.1", "127.0.0.1/31,localhost,", true],
  ["127.0.0.1", "localhost,127.0.0.1", true],
  ["127.0.0.1", token128, false],
  ["127.0.0.1", token127, false],
  ["localhost", "localhost,127.0.0.1", true],
  ["localhost", "127.0.0.1,localhost", true],
  ["foobar", "barfoo", false],
  ["foobar", "foobar", true],
  ["192.168.0.1", "foobar", false],
  ["192.168.0.1", "192.168.0.0/16", true],
  ["192.168.0.1", "192.168.0.0/16a", false],
  ["192.168.0.1", "192.168.0.0/16 ", true],
  ["192.168.0.1", "192.168.0.0/a16", false],
  ["192.168.0.1", "192.168.0.0/ 16", false],
  ["192.168.0.1", "192.168.0.0/24", true],
  ["192.168.0.1", "192.168.0.0/32", false],
  ["192.168.0.1", "192.168.0.1/32", true],
  ["192.168.0.1", "192.168.0.1/33", false],
  ["192.168.0.1", "192.168.0.0", false],
  ["192.168.1.1", "192.168.0.0/24", false],
  ["192.168.1.1", "192.168.0.0/33", false],
  ["192.168.1.1", "foo, bar, 192.168.0.0/24", false],
  ["192.168.1.1", "foo, bar, 192.168.0.0/16", true],
  ["::1", "foo, bar, 192.168.0.0/16", false],
  ["::1", "foo, bar, ::1/64", true],
  ["::1", "::1/64", true],
  ["::1", "::1/96", true],
  ["::1", "::1/129", false],
  ["::1", "::1/128", true],
  ["::1", "::1/127", true],
  ["::1", "::1/a127", false],
  ["::1", "::1/127a", false],
  ["::1", "::1/ 127", false],
  ["::1", "::1/127 ", true],
  ["::1", "::1/126", true],
  ["::1", "::1/125", true],
  ["::1", "::1/124", true],
  ["::1", "::1/123", true],
  ["::1", "::1/122", true],
  ["2001:db8:8000::1", "2001:db8::/65", false],
  ["2001:db8:8000::1", "2001:db8::/66", false],
  ["2001:db8:8000::1", "2001:db8::/67", false],
  ["2001:db8:8000::1", "2001:db8::/68", false],
  ["2001:db8:8000::1", "2001:db8::/69", false],
  ["2001:db8:8000::1", "2001:db8::/70", false],
  ["2001:db8:8000::1", "2001:db8::/71", false],
  ["2001:db8:8000::1", "2001:db8::/72", false],
  ["2001:db8::1", "2001:db8::/65", true],
  ["2001:db8::1", "2001:db8::/66", true],
  ["2001:db8::1", "2001:db8::/67", true],
  ["2001:db8::1", "2001:db8::/68", true],
  ["2001:db8::1", "2001:db8::/69", true],
  ["2001:db8::1", "2001:db8::/70", true],
  ["2001:db8::1", "2001:db8::/71", true],
  ["2001:db8::1", "2001:db8::/72", true],
  ["::1", "::1/129", false],
  ["bar", "foo, bar, ::1/64", true],
  ["BAr", "foo, bar, ::1/64", true],
  ["BAr", "foo,,,,,              bar, ::1/64", true],
  ["www.example.com", "foo, .example.com", true],
  ["www.example.com", "www2.example.com, .example.net", false],
  ["example.com", ".example.com, .example.net", true],
  ["nonexample.com", ".example.com, .example.net", false]
]

describe("NO_PROXY: curl's unit1614", () => {
  it("the tables are whole", () => {
    expect([cidr4.length, cidr6.length, noproxy.length]).toEqual([12, 5, 78])
    expect([token128.length, token127.length]).toEqual([138, 137])
  })

  it.each(cidr4)("list4: %s in %s/%i is %s", (address, network, bits, matches) => {
    expect(bypasses(`${network}/${bits}`, address)).toBe(matches)
  })

  it.each(cidr6)("list6: %s in %s/%i is %s", (address, network, bits, matches) => {
    expect(bypasses(`${network}/${bits}`, address)).toBe(matches)
    expect(bypasses(`${network}/${bits}`, `[${address}]`)).toBe(matches)
  })

  it.each(noproxy)("bypasses: %s in %j is %s", (host, list, matches) => {
    expect(bypasses(list, host)).toBe(matches)
    // A bracketed IPv6 host is the same address.
    if (host.includes(":")) expect(bypasses(list, `[${host}]`)).toBe(matches)
  })

  it.each(noproxy)("select: %s in %j is %s", (host, list, matches) => {
    expect(direct(list, urlOf(host))).toBe(matches)
  })
})

describe("NO_PROXY: the edges, as curl has them", () => {
  it("no host never matches, even `*`; an empty or blank list matches nothing", () => {
    expect(bypasses("*", "")).toBe(false)
    expect(bypasses("", "example.com")).toBe(false)
    expect(bypasses(" ,, \t", "example.com")).toBe(false)
  })

  it("`*` matches everything only as the whole list; `*.example.com` is an ordinary name that no host has", () => {
    expect(bypasses("*", "example.com")).toBe(true)
    expect(bypasses("*", "10.1.2.3")).toBe(true)
    expect(bypasses("*", "[::1]")).toBe(true)
    expect(bypasses("foo,*", "example.com")).toBe(false)
    expect(bypasses("*,foo", "example.com")).toBe(false)
    expect(bypasses(" *", "example.com")).toBe(false)
    expect(bypasses("*.example.com", "www.example.com")).toBe(false)
    expect(bypasses("*.example.com", "example.com")).toBe(false)
  })

  it("a name matches itself and its subdomains, with or without a leading dot, case-insensitively", () => {
    for (const entry of ["example.com", ".example.com", "EXAMPLE.com", "example.com.", ".example.com."]) {
      expect(bypasses(entry, "example.com")).toBe(true)
      expect(bypasses(entry, "WWW.Example.COM")).toBe(true)
      expect(bypasses(entry, "a.b.example.com.")).toBe(true)
      expect(bypasses(entry, "nexample.com")).toBe(false)
      expect(bypasses(entry, "example.com.evil")).toBe(false)
    }
    // A longer entry never matches a shorter name.
    expect(bypasses("www.example.com", "example.com")).toBe(false)
  })

  it("one trailing dot and one leading dot are ignored, not more", () => {
    expect(bypasses("..example.com", "www.example.com")).toBe(false)
    expect(bypasses("example.com..", "example.com")).toBe(false)
    expect(bypasses("example.com", "example.com..")).toBe(false)
  })

  it("entries end at a blank; after one, anything but a comma ends the list (tabs are blanks, line breaks are not)", () => {
    expect(bypasses("a b,c", "a")).toBe(true)
    expect(bypasses("a b,c", "b")).toBe(false)
    expect(bypasses("a b,c", "c")).toBe(false)
    expect(bypasses("a\t,\tb", "b")).toBe(true)
    expect(bypasses(" , ,a ,, b ,", "b")).toBe(true)
    expect(bypasses("a\nb", "a")).toBe(false)
    expect(bypasses("a\nb", "a\nb")).toBe(true)
  })

  it("an entry with a port matches no host", () => {
    expect(bypasses("example.com:8080", "example.com")).toBe(false)
    expect(bypasses("example.com:8080", "www.example.com")).toBe(false)
    expect(bypasses("127.0.0.1:8080", "127.0.0.1")).toBe(false)
    expect(bypasses("[::1]:8080", "::1")).toBe(false)
    expect(direct("example.com:8080", "http://example.com:8080/")).toBe(false)
  })

  it("an IPv6 entry in brackets matches no host; the host may have brackets", () => {
    expect(bypasses("[::1]", "::1")).toBe(false)
    expect(bypasses("[::1]", "[::1]")).toBe(false)
    expect(bypasses("[::1]/64", "::1")).toBe(false)
    expect(bypasses("::1", "[::1]")).toBe(true)
    expect(direct("::1", "http://[::1]:8080/")).toBe(true)
  })

  it("a prefix too long for the family, or not a number, matches nothing; /0 compares the whole address", () => {
    expect(bypasses("10.0.0.0/33", "10.0.0.1")).toBe(false)
    expect(bypasses("10.0.0.1/33", "10.0.0.1")).toBe(false)
    expect(bypasses("10.0.0.0/200", "10.0.0.1")).toBe(false)
    expect(bypasses("10.0.0.0/", "10.0.0.1")).toBe(false)
    expect(bypasses("10.0.0.0/-8", "10.0.0.1")).toBe(false)
    expect(bypasses("::/129", "::1")).toBe(false)
    expect(bypasses("0.0.0.0/0", "10.0.0.1")).toBe(false)
    expect(bypasses("::/0", "::1")).toBe(false)
    expect(bypasses("10.0.0.1/0", "10.0.0.1")).toBe(true)
    expect(bypasses("10.0.0.0/008", "10.9.9.9")).toBe(true)
    expect(bypasses("10.0.0.0/8", "11.0.0.1")).toBe(false)
    expect(bypasses("10.128.0.0/9", "10.200.0.1")).toBe(true)
    expect(bypasses("10.128.0.0/9", "10.100.0.1")).toBe(false)
  })

  it("an address host is compared as an address only, a name host as a name only", () => {
    expect(bypasses("127.0.0.1", "localhost")).toBe(false)
    expect(bypasses("localhost", "127.0.0.1")).toBe(false)
    // No tail match on addresses: `0.0.1` is not a parent domain of 127.0.0.1.
    expect(bypasses("0.0.1", "127.0.0.1")).toBe(false)
    expect(bypasses("1", "127.0.0.1")).toBe(false)
    // No cross-family match: an IPv4-mapped IPv6 host is an IPv6 address.
    expect(bypasses("1.2.3.4", "::ffff:1.2.3.4")).toBe(false)
    expect(bypasses("::ffff:1.2.3.4", "1.2.3.4")).toBe(false)
    // Hosts that are not a dotted quad of canonical octets are names.
    expect(bypasses("127.0.0.0/8", "127.000.0.1")).toBe(false)
    expect(bypasses("127.0.0.0/8", "127.1")).toBe(false)
    expect(bypasses("127.1", "127.1")).toBe(true)
  })

  it("IPv6 addresses are compared as addresses: `::`, leading zeros, case, embedded IPv4", () => {
    expect(bypasses("2001:db8::1", "2001:0DB8:0000:0000:0000:0000:0000:0001")).toBe(true)
    expect(bypasses("2001:DB8:0:0:0:0:0:1", "2001:db8::1")).toBe(true)
    expect(bypasses("::", "::")).toBe(true)
    expect(bypasses("::", "::1")).toBe(false)
    expect(bypasses("1::", "1:0:0:0:0:0:0:0")).toBe(true)
    expect(bypasses("::ffff:0:0/96", "::ffff:1.2.3.4")).toBe(true)
    expect(bypasses("::ffff:1.2.3.4", "::ffff:102:304")).toBe(true)
    expect(bypasses("64:ff9b::/96", "64:ff9b::10.0.0.1")).toBe(true)
    expect(bypasses("fe80::/10", "febf::1")).toBe(true)
    expect(bypasses("fe80::/10", "fec0::1")).toBe(false)
    // Not addresses, so names: compared as strings.
    expect(bypasses("::1", "1::2::3")).toBe(false)
    expect(bypasses("1::2::3", "1::2::3")).toBe(true)
    expect(bypasses("::/0,1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7:8:9")).toBe(true)
    expect(bypasses("1:2:3:4:5:6:7::8", "1:2:3:4:5:6:7:8")).toBe(false)
    expect(bypasses("::1.2.3.4.5", "::1.2.3.4")).toBe(false)
    expect(bypasses("1.2.3.4::", "1.2.3.4::")).toBe(true)
  })
})

describe("Proxy.make", () => {
  it("a value without a scheme is http://, at port 80 unless it says", () => {
    const config = Proxy.make({ http: "proxy:3128", https: "10.0.0.1", all: "[::1]:8080" })
    expect([config.http?.key, config.https?.key, config.all?.key]).toEqual([
      "http://proxy:3128",
      "http://10.0.0.1:80",
      "http://[::1]:8080"
    ])
    expect(config.all).toMatchObject({ scheme: "http", host: "::1", port: 8080, credentials: undefined })
  })

  it("socks5 and socks5h default to port 1080; scheme and host are lower-cased; a path or query is ignored", () => {
    const config = Proxy.make({
      http: "SOCKS5://Proxy.Internal",
      https: "socks5h://[2001:DB8::1]/ignored?x=1",
      all: "HTTP://Proxy.Internal:80/path?q#f"
    })
    expect(config.http).toMatchObject({ scheme: "socks5", host: "proxy.internal", port: 1080, key: "socks5://proxy.internal:1080" })
    expect(config.https).toMatchObject({ scheme: "socks5h", host: "2001:db8::1", port: 1080, key: "socks5h://[2001:db8::1]:1080" })
    expect(config.all?.key).toBe("http://proxy.internal:80")
    expect(Proxy.make({ all: "socks5://proxy:80" }).all?.port).toBe(80)
  })

  it("credentials are percent-decoded into a Redacted; without a username there are none", () => {
    const config = Proxy.make({
      http: "http://us%3Aer:p%40ss%20word@proxy:3128",
      https: "socks5://user@proxy",
      all: "http://:secret@proxy"
    })
    expect(Redacted.value(config.http!.credentials!)).toEqual({ username: "us:er", password: "p@ss word" })
    expect(Redacted.value(config.https!.credentials!)).toEqual({ username: "user", password: "" })
    expect(config.all!.credentials).toBeUndefined()
  })

  it("an endpoint prints as its key: String, JSON, util.inspect, and so does a config holding it", () => {
    const config = Proxy.make({ http: "http://alice:s3cret@proxy:3128", noProxy: "localhost" })
    const endpoint = config.http!
    expect(String(endpoint)).toBe("http://proxy:3128")
    expect(`${endpoint}`).toBe("http://proxy:3128")
    expect(JSON.stringify(endpoint)).toBe("\"http://proxy:3128\"")
    expect(util.inspect(endpoint)).toBe("http://proxy:3128")
    for (const shown of [JSON.stringify(config), util.inspect(config, { depth: 10 }), String(endpoint.credentials)]) {
      expect(shown).not.toContain("alice")
      expect(shown).not.toContain("s3cret")
    }
  })

  it("an empty or missing setting is unset; no settings make a config that selects nothing", () => {
    const config = Proxy.make({ http: "", noProxy: "" })
    expect([config.http, config.https, config.all, config.noProxy]).toEqual([undefined, undefined, undefined, ""])
    expect(Proxy.select(config, "http://example.com/")).toEqual(Option.none())
    expect(Proxy.select(Proxy.none, "https://example.com/")).toEqual(Option.none())
  })

  it.each(["https://proxy:443", "socks4://proxy:1080", "socks4a://proxy", "ftp://proxy", "HTTPS://u:secret@proxy"])(
    "%s is UnsupportedScheme",
    (value) => {
      const error = thrown(() => Proxy.make({ https: value }))
      expect(error).toMatchObject({ _tag: "ProxyConfigError", reason: "UnsupportedScheme", setting: "https" })
      expect(error.message.startsWith("https: ")).toBe(true)
      expect(shownBy(error)).not.toContain("secret")
    }
  )

  it.each(["http://", "socks5://", "http://proxy:99999", "http://[::1", "http://u:secret@proxy:port", "u:secret@", "socks5://u:secret@"])(
    "%s is InvalidUrl",
    (value) => {
      const error = thrown(() => Proxy.make({ all: value }))
      expect(error).toMatchObject({ reason: "InvalidUrl", setting: "all" })
      expect(shownBy(error)).not.toContain("secret")
    }
  )

  it("credentials that are not valid percent-encoding are InvalidUrl, and not shown", () => {
    const error = thrown(() => Proxy.make({ http: "http://alice:%zzsecret@proxy" }))
    expect(error).toMatchObject({ reason: "InvalidUrl", setting: "http" })
    expect(shownBy(error)).not.toContain("secret")
    expect(shownBy(error)).not.toContain("alice")
  })

  it("a password with an unencoded `/` or `@` is never shown", () => {
    // `/` ends the authority, so the URL does not parse and the value is shown without its userinfo.
    const slash = thrown(() => Proxy.make({ http: "http://alice:se/cret@proxy:3128" }))
    expect(shownBy(slash)).not.toContain("se/cret")
    expect(shownBy(slash)).not.toContain("alice")
    // The last `@` ends the userinfo: this one parses, and its scheme is refused.
    const at = thrown(() => Proxy.make({ http: "ftp://alice:se@cret@proxy" }))
    expect(at.detail).toContain("ftp://proxy")
    expect(shownBy(at)).not.toContain("cret")
    expect(shownBy(at)).not.toContain("alice")
  })
})

describe("Proxy.select", () => {
  const config = Proxy.make({
    http: "http://user:pw@http-proxy:3128",
    https: "socks5h://https-proxy",
    all: "http://all-proxy:8080",
    noProxy: "localhost,.internal,10.0.0.0/8,::1"
  })

  it("the request's scheme picks the proxy; the URL is the proxy's key, without credentials", () => {
    expect(Option.map(Proxy.select(config, "http://example.com/a?b"), String)).toEqual(Option.some("http://http-proxy:3128/"))
    expect(Option.map(Proxy.select(config, new URL("https://example.com/")), String)).toEqual(
      Option.some("socks5h://https-proxy:1080")
    )
  })

  it("`all` stands in for the scheme that has none", () => {
    const onlyHttp = Proxy.make({ http: "http-proxy:3128", all: "all-proxy:8080" })
    expect(Option.map(Proxy.select(onlyHttp, "https://example.com/"), String)).toEqual(Option.some("http://all-proxy:8080/"))
    expect(Option.map(Proxy.select(onlyHttp, "http://example.com/"), String)).toEqual(Option.some("http://http-proxy:3128/"))
    const neither = Proxy.make({ http: "http-proxy:3128" })
    expect(Proxy.select(neither, "https://example.com/")).toEqual(Option.none())
  })

  it("NO_PROXY applies to the URL's host, whatever its port", () => {
    expect(Proxy.select(config, "http://localhost:8080/")).toEqual(Option.none())
    expect(Proxy.select(config, "https://db.internal/")).toEqual(Option.none())
    expect(Proxy.select(config, "http://10.20.30.40/")).toEqual(Option.none())
    expect(Proxy.select(config, "http://[::1]:3000/")).toEqual(Option.none())
    expect(Option.isSome(Proxy.select(config, "http://[::2]/"))).toBe(true)
    expect(Option.isSome(Proxy.select(config, "http://internal.example/"))).toBe(true)
  })

  it("a URL that is not http: or https:, or does not parse, goes direct", () => {
    expect(Proxy.select(config, "ws://example.com/")).toEqual(Option.none())
    expect(Proxy.select(config, "ftp://example.com/")).toEqual(Option.none())
    expect(Proxy.select(config, "not a url")).toEqual(Option.none())
  })

  it("endpointFor (the Agent's per-origin call) gives the endpoint itself, for a host with or without brackets", () => {
    expect(internal.endpointFor(config, "http", "example.com")).toBe(config.http)
    expect(internal.endpointFor(config, "https", "example.com")).toBe(config.https)
    expect(internal.endpointFor(config, "http", "::1")).toBeUndefined()
    expect(internal.endpointFor(config, "http", "[::1]")).toBeUndefined()
    expect(internal.endpointFor(Proxy.none, "https", "example.com")).toBeUndefined()
  })

  it("a config not made by this module is read all the same", () => {
    const literal: Proxy.Config = { ...config, [internal.TypeId]: internal.TypeId, noProxy: "example.com" }
    expect(internal.endpointFor(literal, "http", "www.example.com")).toBeUndefined()
    expect(internal.endpointFor(literal, "http", "localhost")).toBe(config.http)
  })
})

describe("Proxy.fromEnv", () => {
  it("reads http_proxy, https_proxy, all_proxy and no_proxy", () => {
    const config = Proxy.fromEnv({
      http_proxy: "http://h:1",
      https_proxy: "socks5://s",
      all_proxy: "a:3",
      no_proxy: "localhost"
    })
    expect([config.http?.key, config.https?.key, config.all?.key, config.noProxy]).toEqual([
      "http://h:1",
      "socks5://s:1080",
      "http://a:3",
      "localhost"
    ])
  })

  it("lower case wins when both are set; upper case counts when lower case is unset or empty", () => {
    const both = Proxy.fromEnv({
      http_proxy: "lower:1",
      HTTP_PROXY: "upper:1",
      https_proxy: "lower:2",
      HTTPS_PROXY: "upper:2",
      all_proxy: "lower:3",
      ALL_PROXY: "upper:3",
      no_proxy: "lower",
      NO_PROXY: "upper"
    })
    expect([both.http?.host, both.https?.host, both.all?.host, both.noProxy]).toEqual(["lower", "lower", "lower", "lower"])
    const upper = Proxy.fromEnv({
      http_proxy: "",
      HTTP_PROXY: "upper:1",
      HTTPS_PROXY: "upper:2",
      all_proxy: "",
      ALL_PROXY: "upper:3",
      no_proxy: "",
      NO_PROXY: "upper"
    })
    expect([upper.http?.host, upper.https?.host, upper.all?.host, upper.noProxy]).toEqual(["upper", "upper", "upper", "upper"])
  })

  it("empty values are unset", () => {
    const config = Proxy.fromEnv({ http_proxy: "", HTTPS_PROXY: "", all_proxy: "", NO_PROXY: "" })
    expect([config.http, config.https, config.all, config.noProxy]).toEqual([undefined, undefined, undefined, ""])
    expect(Proxy.select(config, "http://example.com/")).toEqual(Option.none())
  })

  it("an upper-case value that cannot be used is not read when the lower-case one is set", () => {
    expect(Proxy.fromEnv({ https_proxy: "proxy:1", HTTPS_PROXY: "ftp://bad" }).https?.key).toBe("http://proxy:1")
  })

  it("under CGI (REQUEST_METHOD set), HTTP_PROXY is ignored; http_proxy and the others are read", () => {
    const cgi = Proxy.fromEnv({ REQUEST_METHOD: "GET", HTTP_PROXY: "http://attacker:80", HTTPS_PROXY: "proxy:2" })
    expect(cgi.http).toBeUndefined()
    expect(cgi.https?.key).toBe("http://proxy:2")
    expect(Proxy.select(cgi, "http://example.com/")).toEqual(Option.none())
    expect(Proxy.fromEnv({ REQUEST_METHOD: "GET", http_proxy: "proxy:1" }).http?.key).toBe("http://proxy:1")
    // An empty REQUEST_METHOD is unset.
    expect(Proxy.fromEnv({ REQUEST_METHOD: "", HTTP_PROXY: "proxy:1" }).http?.key).toBe("http://proxy:1")
    // The ignored value is not even checked.
    expect(Proxy.fromEnv({ REQUEST_METHOD: "POST", HTTP_PROXY: "ftp://bad" }).http).toBeUndefined()
  })

  it("under CGI with case-insensitive names (Windows), http_proxy that is really HTTP_PROXY is ignored too", () => {
    const names = ["REQUEST_METHOD", "HTTP_PROXY"]
    const values: Record<string, string> = { REQUEST_METHOD: "GET", HTTP_PROXY: "http://attacker:80" }
    const windows = new globalThis.Proxy(values, {
      get: (target, name) => typeof name === "string" ? target[name.toUpperCase()] : undefined,
      ownKeys: () => names,
      getOwnPropertyDescriptor: (target, name) =>
        typeof name === "string" && names.includes(name)
          ? { value: target[name], enumerable: true, configurable: true }
          : undefined
    })
    expect(windows["http_proxy"]).toBe("http://attacker:80")
    expect(Proxy.fromEnv(windows).http).toBeUndefined()
  })

  it("ALL_PROXY stands in for the scheme without its own", () => {
    const config = Proxy.fromEnv({ ALL_PROXY: "socks5h://gateway", http_proxy: "proxy:3128" })
    expect(Option.map(Proxy.select(config, "https://example.com/"), String)).toEqual(Option.some("socks5h://gateway:1080"))
    expect(Option.map(Proxy.select(config, "http://example.com/"), String)).toEqual(Option.some("http://proxy:3128/"))
  })

  it("no_proxy=* sends everything direct", () => {
    const config = Proxy.fromEnv({ ALL_PROXY: "proxy:3128", no_proxy: "*" })
    expect(Proxy.select(config, "https://example.com/")).toEqual(Option.none())
    expect(Proxy.select(config, "http://10.0.0.1/")).toEqual(Option.none())
    expect(Proxy.select(config, "http://[::1]/")).toEqual(Option.none())
  })

  it("a value that cannot be used throws, naming the variable as it is spelled, never showing credentials", () => {
    const cases: ReadonlyArray<readonly [Record<string, string>, string, "InvalidUrl" | "UnsupportedScheme"]> = [
      [{ https_proxy: "https://alice:hunter2@proxy:443" }, "https_proxy", "UnsupportedScheme"],
      [{ HTTPS_PROXY: "https://alice:hunter2@proxy:443" }, "HTTPS_PROXY", "UnsupportedScheme"],
      [{ http_proxy: "socks4://alice:hunter2@proxy" }, "http_proxy", "UnsupportedScheme"],
      [{ HTTP_PROXY: "http://alice:hunter2@proxy:http" }, "HTTP_PROXY", "InvalidUrl"],
      [{ all_proxy: "http://alice:hunter2@" }, "all_proxy", "InvalidUrl"],
      [{ ALL_PROXY: "socks5://alice:hunter2@" }, "ALL_PROXY", "InvalidUrl"]
    ]
    for (const [env, setting, reason] of cases) {
      const error = thrown(() => Proxy.fromEnv(env))
      expect(error).toMatchObject({ _tag: "ProxyConfigError", reason, setting })
      expect(error.message.startsWith(`${setting}: `)).toBe(true)
      expect(shownBy(error)).not.toContain("hunter2")
      expect(shownBy(error)).not.toContain("alice")
    }
  })

  it("reads process.env by default", () => {
    const env = process.env as Record<string, string | undefined>
    const names = ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY", "REQUEST_METHOD"]
    const saved = names.map((name) => [name, env[name]] as const)
    try {
      for (const name of names) delete env[name]
      env["https_proxy"] = "http://from-process-env:3128"
      env["no_proxy"] = ".internal"
      const config = Proxy.fromEnv()
      expect(config.https?.key).toBe("http://from-process-env:3128")
      expect(Proxy.select(config, "https://db.internal/")).toEqual(Option.none())
    } finally {
      for (const [name, value] of saved) {
        if (value === undefined) delete env[name]
        else env[name] = value
      }
    }
  })
})
