/** A tracer that records its spans, to compare the Agent's with @effect/platform's. */
import type * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/** A span that keeps what it was told. */
export class RecordedSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly spanId: string
  readonly traceId: string
  readonly sampled = true
  readonly attributes = new Map<string, unknown>()
  status: Tracer.SpanStatus
  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Tracer.Span["context"],
    readonly links: Array<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind,
    id: number
  ) {
    this.status = { _tag: "Started", startTime }
    this.traceId = Option.isSome(parent) ? parent.value.traceId : id.toString(16).padStart(32, "0")
    this.spanId = id.toString(16).padStart(16, "0")
  }
  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }
  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }
  event(): void {}
  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

export const recordingTracer = () => {
  const spans: Array<RecordedSpan> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const span = new RecordedSpan(name, parent, context, [...links], startTime, kind, spans.length + 1)
      spans.push(span)
      return span
    },
    context: (f) => f()
  })
  return { spans, tracer }
}

/**
 * What a span says, with its own ids replaced, so that two spans can be
 * compared; without what only the Agent's pool adds (`keepalive.*`).
 */
export const described = (span: RecordedSpan, outer: RecordedSpan) => ({
  name: span.name,
  kind: span.kind,
  childOfOuter: Option.isSome(span.parent) && span.parent.value.spanId === outer.spanId,
  attributes: Object.fromEntries([...span.attributes].filter(([key]) => !key.startsWith("keepalive."))),
  exit: span.status._tag === "Ended" ? span.status.exit._tag : "Started"
})

/** The spans HttpClient.make would make too: without the pool's own (`keepalive.connect`). */
export const withoutPool = (spans: ReadonlyArray<RecordedSpan>) => spans.filter((s) => !s.name.startsWith("keepalive."))

/** The trace headers a server saw, with the span's ids replaced. */
export const traceHeaders = (headers: Record<string, string>, span: RecordedSpan) =>
  Object.fromEntries(
    Object.entries(headers)
      .filter(([key]) => key === "traceparent" || key.startsWith("b3") || key.startsWith("x-b3"))
      .map(([key, value]) => [key, value.replaceAll(span.traceId, "<trace>").replaceAll(span.spanId, "<span>")])
  )

