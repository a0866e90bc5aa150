/**
 * The place of a value in a `List`; what `List.remove` takes back. A value that
 * comes and goes (an idle connection, a watched deadline) keeps one node for
 * good and `append`s it again, rather than allocating a node each time.
 *
 * @internal
 */
export class ListNode<A> {
  prev: ListNode<A> | undefined = undefined
  next: ListNode<A> | undefined = undefined
  /** The list it is in, if any. */
  list: List<A> | undefined = undefined
  constructor(readonly value: A) {}
}

/**
 * A doubly linked list: push at the end, remove any node, in O(1), oldest first.
 *
 * What the pool and the watchdog keep of each request or connection (waiters,
 * openings, fibers, deadlines) lives in lists like this one, not in a `Set` or
 * `Map`. A long-lived Set's table is in V8's old space, and a deleted entry's
 * key stays in it until the table is next rehashed: every young object that
 * passed through the Set, even one deleted at once, is kept by each minor GC
 * until then, promoted to old space, and with it all it references (for a
 * connection: its socket, parser, exchange, fibers). Here a removed node is
 * unlinked at once, and nothing old points to it any more.
 *
 * @internal
 */
export class List<A> {
  #head: ListNode<A> | undefined = undefined
  #tail: ListNode<A> | undefined = undefined
  size = 0

  /** Appends a value; its node removes it. */
  push(value: A): ListNode<A> {
    return this.append(new ListNode(value))
  }

  /** Appends a node, taken out of the list it was in first. */
  append(node: ListNode<A>): ListNode<A> {
    node.list?.remove(node)
    node.list = this
    node.prev = this.#tail
    if (this.#tail === undefined) this.#head = node
    else this.#tail.next = node
    this.#tail = node
    this.size++
    return node
  }

  /** Removes the node; false when it is not (or no longer) in this list. */
  remove(node: ListNode<A> | undefined): boolean {
    if (node?.list !== this) return false
    const { next, prev } = node
    if (prev === undefined) this.#head = next
    else prev.next = next
    if (next === undefined) this.#tail = prev
    else next.prev = prev
    node.prev = node.next = node.list = undefined
    this.size--
    return true
  }

  /** The oldest node (then `next` towards the newest). */
  get firstNode(): ListNode<A> | undefined {
    return this.#head
  }

  /** The oldest value. */
  get first(): A | undefined {
    return this.#head?.value
  }

  /** The newest node (then `prev` towards the oldest). */
  get lastNode(): ListNode<A> | undefined {
    return this.#tail
  }

  /** The newest value. */
  get last(): A | undefined {
    return this.#tail?.value
  }

  /** The nodes, oldest first, as they are now: removing any of them meanwhile is safe. */
  nodes(): Array<ListNode<A>> {
    const nodes: Array<ListNode<A>> = []
    for (let node = this.#head; node !== undefined; node = node.next) nodes.push(node)
    return nodes
  }

  /** Removes every node. */
  clear(): void {
    for (const node of this.nodes()) this.remove(node)
  }
}
