import type * as CliConfig from "@effect/cli/CliConfig"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Span from "@effect/cli/HelpDoc/Span"
import * as Primitive from "@effect/cli/Primitive"
import * as Usage from "@effect/cli/Usage"
import * as Option from "effect/Option"

/**
 * What @effect/cli says of every text option and argument, before the
 * option's own description: it adds nothing to a description, so the help
 * leaves it out. Taken from @effect/cli rather than spelled out here, so
 * that a change of its wording cannot bring it back.
 */
const textNote = Primitive.getHelp(Primitive.text)

const isTextNote = (doc: HelpDoc.HelpDoc): boolean =>
  doc._tag === "Paragraph" && doc.value._tag === "Text" && textNote._tag === "Text" && doc.value.value === textNote.value

/**
 * `doc` without the note @effect/cli puts on every text option and argument.
 *
 * @internal
 */
export const withoutTextNote = (doc: HelpDoc.HelpDoc): HelpDoc.HelpDoc => {
  switch (doc._tag) {
    case "Paragraph":
      return isTextNote(doc) ? HelpDoc.empty : doc
    case "Sequence":
      return HelpDoc.sequence(withoutTextNote(doc.left), withoutTextNote(doc.right))
    case "DescriptionList": {
      const [first, ...rest] = doc.definitions.map(([span, block]): [Span.Span, HelpDoc.HelpDoc] => [span, withoutTextNote(block)])
      return HelpDoc.descriptionList([first!, ...rest])
    }
    case "Enumeration": {
      const [first, ...rest] = doc.elements.map(withoutTextNote)
      return HelpDoc.enumeration([first!, ...rest])
    }
    case "Empty":
    case "Header":
      return doc
  }
}

/** The names a usage shows, in order: its command's, then its options' and arguments'. */
const namesOf = (usage: Usage.Usage): ReadonlyArray<string> => {
  switch (usage._tag) {
    case "Named":
      return usage.names
    case "Concat":
    case "Alternation":
      return [...namesOf(usage.left), ...namesOf(usage.right)]
    case "Optional":
    case "Repeated":
      return namesOf(usage.usage)
    case "Empty":
    case "Mixed":
      return []
  }
}

/**
 * The usage a user types. @effect/cli gives a subcommand's without its
 * parent (`fetch …`; with it only for `keepalive --help fetch --help`): it
 * gets the program's name in front. The program's own usage, its name
 * alone, gets the `<command>` it needs (@effect/cli's `Usage.mixed`, meant
 * for that, is empty).
 *
 * @internal
 */
export const fromProgram = (program: string, usage: Usage.Usage): Usage.Usage => {
  const names = namesOf(usage)
  if (names[0] !== program) return Usage.concat(Usage.named([program], Option.none()), usage)
  return names.length === 1 ? Usage.concat(usage, Usage.named(["<command>"], Option.none())) : usage
}

/**
 * The help of a command, as @effect/cli lays it out (the program's name and
 * version, USAGE, then the command's own help) with two differences: the
 * usage lines start with the program's name rather than a `$ ` prompt, and
 * the text note is left out of the options' and arguments' descriptions.
 * @effect/cli offers no setting for either, so its `--help` is answered
 * here, from the usage and the help it parsed.
 *
 * @internal
 */
export const render = (
  app: { readonly name: string; readonly version: string },
  usage: Usage.Usage,
  help: HelpDoc.HelpDoc,
  config: CliConfig.CliConfig
): string => {
  const lines = Usage.enumerate(fromProgram(app.name, usage), config).map((span) => HelpDoc.p(span))
  const doc = [
    HelpDoc.h1(Span.code(app.name)),
    HelpDoc.p(`${app.name} ${app.version}`),
    HelpDoc.h1("USAGE"),
    ...lines,
    withoutTextNote(help)
  ].reduce((left, right) => HelpDoc.sequence(left, right), HelpDoc.empty)
  return HelpDoc.toAnsiText(doc)
}
